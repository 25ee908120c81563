"""Cloud Build faults, with the real google-cloud-build client (REST) against the fake
server and the source bucket on fake-gcs-server: build status observations that arrive twice
and out of order, a retried job re-reading a finished Cloud Build through a stale answer, and
a worker process killed during the create call. The recorded stage and build statuses never
regress, each final status is recorded once, and no second Cloud Build is ever made."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.responses import JSONResponse, Response

from tests.cloudbuild import conftest as cloudbuild
from tests.cloudbuild.conftest import make_builder
from tests.cloudbuild.fake_server import FakeBuild, FakeCloudBuild, Plan, ServerThread
from tests.cloudbuild.test_builder import posts
from tests.cloudbuild.test_worker import pipeline_with
from tests.conftest import SECRET
from tests.reliability.test_faults_worker import kill_group, spawn, stop, wait_until
from tests.worker.conftest import build_view, events, job_row, new_build
from trainhook.db import reading
from trainhook.runtime import build_runtime
from trainhook.settings import Settings
from worker.cloudbuild.supersede import stored_cloud_build
from worker.context import BuildContext
from worker.loop import Worker

# The Cloud Build fixtures (fake-gcs-server, source bucket, settings pointing at the fake).
gcs_url = cloudbuild.gcs_url
source_bucket = cloudbuild.source_bucket
cloud_settings = cloudbuild.cloud_settings
settings = cloudbuild.settings
db = cloudbuild.db

BUILDER = ("build", "push", "deploy", "vertex")
RANK = {"pending": 0, "running": 1, "succeeded": 2, "failed": 2, "skipped": 2}
# The fake's default build: queued 0..10 s, build 10..30, push 30..50, deploy ∥ vertex 50..70.
DONE_AT = 70.0


class ScriptedCloudBuild(FakeCloudBuild):
    """The fake server, but the n-th GET of a build answers its snapshot at `script[n]`
    simulated seconds (repeats are duplicate observations, a smaller time an out-of-order
    one); once the script is used up, the finished build."""

    def __init__(self, script: list[float]) -> None:
        super().__init__()
        self.script = list(script)
        self.answered: list[str] = []

    def _get(self, build: FakeBuild) -> Response:
        with self.lock:
            at = self.script.pop(0) if self.script else DONE_AT
            build.gets += 1
            build.elapsed = max(build.elapsed, at)  # the build itself only moves forward
            snapshot = build.snapshot(at=at)
            self.answered.append(snapshot["status"])
            return JSONResponse(snapshot)


def scripted(script: list[float]) -> Iterator[ScriptedCloudBuild]:
    app = ScriptedCloudBuild(script)
    with ServerThread(app) as server:
        app.url = server.url  # type: ignore[attr-defined]
        yield app


@pytest.fixture
def fake(request: pytest.FixtureRequest) -> Iterator[ScriptedCloudBuild]:
    yield from scripted(list(request.param))


def assert_never_regressed_and_final_once(engine: Any, build_id: int) -> None:
    for stage in BUILDER:
        statuses = [status for _, status in events(engine, build_id, stage)]
        ranks = [RANK[s] for s in statuses]
        assert ranks == sorted(ranks), f"{stage} regressed: {statuses}"
        finals = [s for s in statuses if RANK[s] == 2]
        assert finals == ["succeeded"], f"{stage}: final statuses recorded {finals}"


# Polls: WORKING (build running) twice, an older QUEUED one, WORKING with push running, the
# same again, a stale one with build still running, then SUCCESS, SUCCESS.
OUT_OF_ORDER = [15.0, 15.0, 5.0, 35.0, 35.0, 20.0, 0.0, DONE_AT, DONE_AT]


@pytest.mark.parametrize("fake", [OUT_OF_ORDER], indirect=True)
def test_duplicate_and_out_of_order_build_observations_never_regress_a_stage(
    settings,
    db,
    fake: ScriptedCloudBuild,
    tmp_path: Path,
):
    build_id = new_build(db, "c" * 40)
    worker = Worker(
        build_runtime(settings, db),
        pipeline=pipeline_with(make_builder(settings), tmp_path),
        backoff=lambda _: 0,
    )

    assert worker.run(threading.Event(), burst=True) == 1

    assert "QUEUED" in fake.answered[2:] and fake.answered.count("SUCCESS") >= 1
    assert_never_regressed_and_final_once(db, build_id)
    view = build_view(db, build_id)
    assert view["status"] == "succeeded"
    assert [s["status"] for s in view["stages"][6:]] == ["succeeded"] * 4


class LostAfterFinish:
    """The builder step, but the first time the worker's network goes right after the Cloud
    Build finished (before the build's final status is written): the job is retried."""

    def __init__(self, builder: Any) -> None:
        self.builder = builder
        self.stages = builder.stages
        self.calls = 0

    def __call__(self, ctx: BuildContext) -> None:
        self.calls += 1
        self.builder(ctx)
        if self.calls == 1:
            raise ConnectionError("network lost after the Cloud Build finished")


# The first run follows the build to SUCCESS; the retry's first read answers an old
# snapshot (WORKING, then QUEUED) before the finished build again.
STALE_ON_RETRY = [15.0, 35.0, 55.0, DONE_AT, 35.0, 0.0, DONE_AT]


@pytest.mark.parametrize("fake", [STALE_ON_RETRY], indirect=True)
def test_a_retry_rereading_a_finished_cloud_build_records_each_final_status_once(
    settings,
    db,
    fake: ScriptedCloudBuild,
    tmp_path: Path,
):
    build_id = new_build(db, "c" * 40)
    step = LostAfterFinish(make_builder(settings))
    pipeline = pipeline_with(step, tmp_path)
    worker = Worker(build_runtime(settings, db), pipeline=pipeline, backoff=lambda _: 0)

    assert worker.run(threading.Event(), burst=True) == 2  # the attempt, then the retry

    assert step.calls == 2 and len(fake.builds) == 1
    assert fake.answered[:4] == ["WORKING", "WORKING", "WORKING", "SUCCESS"]
    assert "QUEUED" in fake.answered[4:]
    assert_never_regressed_and_final_once(db, build_id)
    assert build_view(db, build_id)["status"] == "succeeded"


def cloudbuild_env(settings: Settings) -> dict[str, str]:
    """The environment of `trainhook worker` for these Cloud Build settings (short lease)."""
    return {
        "TRAINHOOK_HOME": str(settings.home),
        "TRAINHOOK_CONFIG": str(settings.config_path),
        "TRAINHOOK_DATABASE_URL": settings.database_url,
        "TEST_WEBHOOK_SECRET": SECRET,
        "TRAINHOOK_BUILDER": "cloudbuild",
        "TRAINHOOK_GCP_PROJECT": str(settings.gcp_project),
        "TRAINHOOK_GCP_REGION": str(settings.gcp_region),
        "TRAINHOOK_SOURCE_BUCKET": str(settings.source_bucket),
        "TRAINHOOK_CLOUDBUILD_ENDPOINT": str(settings.cloudbuild_endpoint),
        "TRAINHOOK_CLOUDBUILD_POLL_INTERVAL": "0.001",
        "TRAINHOOK_LEASE_SECONDS": "2",
        "TRAINHOOK_POLL_INTERVAL": "0.05",
    }


@pytest.mark.parametrize("fake", [[]], indirect=True)
def test_a_worker_killed_mid_submit_never_makes_a_second_cloud_build(
    settings, db, fake: ScriptedCloudBuild, tmp_path: Path
):
    # Cloud Build makes the build, then its answer takes seconds: the worker dies meanwhile.
    fake.plan = Plan(create_fault="slow", slow_seconds=3.0)
    build_id = new_build(db, "c" * 40)
    sync = tmp_path / "sync"
    sync.mkdir()
    env = cloudbuild_env(settings)
    doomed = spawn("tests.reliability.fault_worker", ["cloudbuild", str(sync), "doomed"], env)
    wait_until(lambda: len(fake.builds) == 1, 40, "the create call reached Cloud Build", [doomed])
    kill_group(doomed)
    with reading(db) as conn:
        assert stored_cloud_build(conn, build_id) is None  # it never heard the answer

    rescuer = spawn("tests.reliability.fault_worker", ["cloudbuild", str(sync), "rescuer"], env)
    try:
        wait_until(
            lambda: build_view(db, build_id)["status"] == "succeeded", 40, "rescued", [rescuer]
        )
    finally:
        assert stop(rescuer) == 0

    (remote,) = fake.builds.values()
    assert posts(fake) == 1, "a second Cloud Build was requested"
    with reading(db) as conn:
        assert stored_cloud_build(conn, build_id) == remote.id  # adopted by its tag
    assert job_row(db, build_id).attempts == 2
    assert_never_regressed_and_final_once(db, build_id)

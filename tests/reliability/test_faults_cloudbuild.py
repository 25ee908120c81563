"""Cloud Build faults, with the real google-cloud-build client (REST) against the fake
server and the source bucket on fake-gcs-server: build status observations that arrive twice
and out of order, and a retried job re-reading a finished Cloud Build through a stale answer.
The recorded stage and build statuses never regress and each final status is recorded once."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.responses import JSONResponse, Response

from tests.cloudbuild import conftest as cloudbuild
from tests.cloudbuild.conftest import make_builder
from tests.cloudbuild.fake_server import FakeBuild, FakeCloudBuild, ServerThread
from tests.cloudbuild.test_worker import pipeline_with
from tests.worker.conftest import build_view, events, new_build
from trainhook.runtime import build_runtime
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

"""The Cloud Build builder over the real google-cloud-build client (REST) against the fake
server, with the source bucket on fake-gcs-server."""

from __future__ import annotations

from typing import Any

import pytest
from google.cloud import storage

from tests.cloudbuild.conftest import IMAGE, METRICS, make_builder, ready
from tests.cloudbuild.fake_server import Plan
from tests.worker.conftest import events, stage_map
from trainhook.db import reading
from worker.cloudbuild.supersede import stored_cloud_build
from worker.pipeline import Pipeline
from worker.stage import StageFailed

BUILDER = ("build", "push", "deploy", "vertex")


def only_build(fake: Any) -> Any:
    assert len(fake.builds) == 1, f"expected one Cloud Build, found {len(fake.builds)}"
    return next(iter(fake.builds.values()))


def posts(fake: Any) -> int:
    return sum(1 for method, path in fake.requests if method == "POST" and path.endswith("/builds"))


def test_a_successful_build_reports_every_step_with_its_own_times(settings, db, fake, tmp_path):
    ctx = ready(settings, db, tmp_path)

    make_builder(settings)(ctx)

    stages = stage_map(db, ctx.build.id)
    assert {s: stages[s]["status"] for s in BUILDER} == dict.fromkeys(BUILDER, "succeeded")
    # build 10..30 s, push 30..50 s, then deploy and vertex in parallel 50..70 s (fake clock)
    assert (stages["build"]["started_at"], stages["build"]["finished_at"]) == (
        "2030-01-01T00:00:10.000Z",
        "2030-01-01T00:00:30.000Z",
    )
    assert stages["push"]["started_at"] == "2030-01-01T00:00:30.000Z"
    assert stages["deploy"]["started_at"] == stages["vertex"]["started_at"]
    assert stages["deploy"]["duration_s"] == 20.0
    remote = only_build(fake)
    assert (
        remote.id in stages["deploy"]["detail"]
        and "https://console.cloud.google.com" in (stages["deploy"]["detail"])
    )
    tags = remote.request["tags"]
    assert f"trainhook-build-{ctx.build.id}" in tags and ctx.repo.slug in tags
    with reading(db) as conn:
        assert stored_cloud_build(conn, ctx.build.id) == remote.id


def test_the_source_bundle_is_uploaded_once_under_its_digest(settings, db, fake, tmp_path):
    ctx = ready(settings, db, tmp_path)
    builder = make_builder(settings)
    builder(ctx)
    source = only_build(fake).request["source"]["storageSource"]
    assert ctx.bundle is not None
    assert source["object"] == f"trainhook/sources/{ctx.repo.slug}/{ctx.bundle.digest}.tar.gz"
    blob = storage.Client(project="p").bucket(source["bucket"]).get_blob(source["object"])
    assert blob is not None and blob.size == ctx.bundle.size

    again = builder.store.upload(ctx.repo.slug, ctx.bundle)
    assert again[1] == "already uploaded"


def test_the_model_it_deployed_is_what_the_gate_compares_with_next(settings, db, fake, tmp_path):
    ctx = ready(settings, db, tmp_path)
    builder = make_builder(settings)
    assert builder.deployed_metrics(ctx) is None
    builder(ctx)
    assert builder.deployed_metrics(ctx) == METRICS
    record = builder.store.read_deployed(ctx.repo.slug)
    assert record is not None and record["image"] == f"{IMAGE}:{ctx.build.sha}"


def test_a_failing_deploy_fails_the_build_with_the_reason_and_log_url(settings, db, fake, tmp_path):
    fake.plan = Plan(outcomes={"deploy": "FAILURE"}, durations={"vertex": 5})
    ctx = ready(settings, db, tmp_path)

    reason = Pipeline([make_builder(settings)]).run(ctx)

    assert reason is not None and reason.startswith("deploy failed: Cloud Build")
    stages = stage_map(db, ctx.build.id)
    assert stages["deploy"]["status"] == "failed"
    assert "step deploy failed" in stages["deploy"]["detail"]
    assert "logs https://console.cloud.google.com" in stages["deploy"]["detail"]
    assert stages["deploy"]["finished_at"] == "2030-01-01T00:01:10.000Z"
    assert stages["vertex"]["status"] == "succeeded"  # it ran in parallel and was submitted
    assert stages["build"]["status"] == stages["push"]["status"] == "succeeded"


def test_a_build_step_timing_out_fails_it_and_skips_the_rest(settings, db, fake, tmp_path):
    fake.plan = Plan(outcomes={"build": "TIMEOUT"})
    ctx = ready(settings, db, tmp_path)

    with pytest.raises(StageFailed, match="step build timed out"):
        make_builder(settings)(ctx)

    assert dict(ctx.recorder.done) == {
        "build": "failed",
        "push": "skipped",
        "deploy": "skipped",
        "vertex": "skipped",
    }
    assert "not run: Cloud Build TIMEOUT" in stage_map(db, ctx.build.id)["push"]["detail"]


def test_a_build_that_expires_in_the_queue_fails_its_build_stage(settings, db, fake, tmp_path):
    fake.plan = Plan(expire=True)
    ctx = ready(settings, db, tmp_path)

    with pytest.raises(StageFailed, match=r"expired in the queue \(queueTtl\)"):
        make_builder(settings)(ctx)

    stages = stage_map(db, ctx.build.id)
    assert stages["build"]["status"] == "failed"
    assert [stages[s]["status"] for s in ("push", "deploy", "vertex")] == ["skipped"] * 3


def test_a_slow_build_is_polled_until_done_and_never_regresses(settings, db, fake, tmp_path):
    # Many polls per step, a transient 503 and a stale snapshot (QUEUED again) on the 6th GET.
    fake.plan = Plan(tick=2.0, get_faults=2, stale_gets=frozenset({6}))
    ctx = ready(settings, db, tmp_path)

    make_builder(settings, retry=None)(ctx)

    gets = only_build(fake).gets
    assert gets > 30
    for stage in BUILDER:
        statuses = [status for _, status in events(db, ctx.build.id, stage)]
        assert statuses[-2:] == ["running", "succeeded"], (stage, statuses)
        assert statuses.count("running") == 1


def test_a_lost_create_answer_is_adopted_by_its_tag_not_built_twice(settings, db, fake, tmp_path):
    fake.plan = Plan(create_fault="503")
    ctx = ready(settings, db, tmp_path)

    make_builder(settings)(ctx)

    remote = only_build(fake)
    assert posts(fake) == 1
    assert stage_map(db, ctx.build.id)["deploy"]["status"] == "succeeded"
    with reading(db) as conn:
        assert stored_cloud_build(conn, ctx.build.id) == remote.id


@pytest.mark.parametrize("fault", ["slow", "drop"])
def test_an_answer_that_times_out_or_drops_is_adopted_too(settings, db, fake, tmp_path, fault):
    fake.plan = Plan(create_fault=fault, slow_seconds=1.0)
    ctx = ready(settings, db, tmp_path)

    make_builder(settings, call_timeout=0.4)(ctx)

    only_build(fake)
    assert stage_map(db, ctx.build.id)["vertex"]["status"] == "succeeded"


class CrashAfterCreate:
    """A client whose process 'dies' right after Cloud Build accepted the create."""

    def __init__(self, client: Any) -> None:
        self.client = client

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client, name)

    def create_build(self, *args: Any, **kwargs: Any) -> Any:
        self.client.create_build(*args, **kwargs)
        raise SystemExit("worker killed")


def test_a_crash_between_create_and_store_adopts_on_the_next_attempt(settings, db, fake, tmp_path):
    ctx = ready(settings, db, tmp_path)
    builder = make_builder(settings)
    crashing = make_builder(settings, client=CrashAfterCreate(builder.client))
    with pytest.raises(SystemExit):
        crashing(ctx)
    with reading(db) as conn:
        assert stored_cloud_build(conn, ctx.build.id) is None

    retry = ready(settings, db, tmp_path / "retry")
    retry.build, retry.recorder = ctx.build, ctx.recorder
    retry.recorder.done.clear()
    builder(retry)

    assert posts(fake) == 1 and only_build(fake).terminal
    assert stage_map(db, ctx.build.id)["deploy"]["status"] == "succeeded"


def test_a_retried_job_follows_the_stored_build_without_listing(settings, db, fake, tmp_path):
    ctx = ready(settings, db, tmp_path)
    make_builder(settings)(ctx)
    before = list(fake.requests)
    ctx.recorder.done.clear()

    make_builder(settings)(ctx)

    new = fake.requests[len(before) :]
    assert posts(fake) == 1
    assert not any(method == "GET" and path.endswith("/builds") for method, path in new)


def test_without_a_vertex_table_there_is_no_vertex_step(cloud_settings, db, fake, tmp_path):
    settings = cloud_settings(vertex=False)
    ctx = ready(settings, db, tmp_path)

    make_builder(settings)(ctx)

    assert [step["id"] for step in only_build(fake).request["steps"]] == [
        "build",
        "push",
        "deploy",
    ]
    vertex = stage_map(db, ctx.build.id)["vertex"]
    assert vertex["status"] == "skipped" and "no [repos.vertex]" in vertex["detail"]


def test_a_refused_request_fails_the_build_instead_of_retrying(settings, db, fake, tmp_path):
    denied = "Cloud Build API has not been used in project octo-project or it is disabled"
    fake.plan = Plan(refuse=(403, "PERMISSION_DENIED", denied))
    ctx = ready(settings, db, tmp_path)

    with pytest.raises(StageFailed, match="Cloud Build refused the build request: 403"):
        make_builder(settings)(ctx)

    assert posts(fake) == 1 and fake.builds == {}


def test_the_deployed_record_falls_back_to_the_models_own_metrics(settings, db, fake, tmp_path):
    ctx = ready(settings, db, tmp_path)
    ctx.metrics = None  # a train stage that left only the model directory
    builder = make_builder(settings)
    builder(ctx)
    assert builder.deployed_metrics(ctx) == METRICS

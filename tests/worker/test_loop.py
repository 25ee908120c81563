"""The worker loop over the SQL queue, on SQLite and PostgreSQL, with toy pipelines."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from tests.worker.conftest import (
    PIPELINE_STAGES,
    build_view,
    events,
    job_row,
    new_build,
    stage_map,
    toy_pipeline,
)
from trainhook.builds import mark_finished
from trainhook.models import jobs
from trainhook.runtime import Runtime, build_runtime
from trainhook.settings import Settings
from worker.context import BuildContext
from worker.loop import Worker
from worker.pipeline import Pipeline
from worker.stage import Outcome, SingleStage, StageFailed


def no_wait(attempt: int) -> float:
    return 0.0


def counting(calls: list[int]) -> Callable[[BuildContext], Outcome]:
    """A stage that notes each time it runs."""

    def stage(ctx: BuildContext) -> Outcome:
        calls.append(ctx.build.id)
        return Outcome()

    return stage


def runtime_with(
    db_url: str, engine: sa.Engine, make_settings: Callable[..., Settings], **env: str
) -> Runtime:
    return build_runtime(make_settings(db_url, env=env), engine)


def test_worker_runs_a_queued_build_and_records_every_stage(runtime: Runtime, engine):
    build_id = new_build(engine)
    worker = Worker(runtime, owner="w1", pipeline=toy_pipeline())

    assert worker.run(threading.Event(), burst=True) == 1

    view = build_view(engine, build_id)
    assert view["status"] == "succeeded"
    assert view["started_at"] and view["finished_at"] and view["error"] is None
    stages = {s["name"]: s for s in view["stages"]}
    assert stages["queued"]["status"] == "succeeded"
    assert "w1" in stages["queued"]["detail"]
    assert all(stages[name]["status"] == "succeeded" for name in PIPELINE_STAGES)
    assert job_row(engine, build_id).status == "done"
    seconds = runtime.metrics.registry.get_sample_value(
        "trainhook_stage_duration_seconds_count", {"stage": "train", "status": "succeeded"}
    )
    assert seconds == 1


def test_job_of_a_build_already_finished_is_completed_without_work(runtime: Runtime, engine):
    build_id = new_build(engine)
    with engine.begin() as conn:
        mark_finished(conn, build_id, "cancelled")
    ran: list[int] = []
    worker = Worker(runtime, pipeline=toy_pipeline({"checkout": counting(ran)}))

    assert worker.run(threading.Event(), burst=True) == 1

    assert ran == []
    assert build_view(engine, build_id)["status"] == "cancelled"
    assert job_row(engine, build_id).status == "done"


def test_a_job_delivered_twice_produces_one_build_result(runtime: Runtime, engine):
    build_id = new_build(engine)
    runs: list[int] = []
    pipeline = toy_pipeline({"checkout": counting(runs)})
    Worker(runtime, pipeline=pipeline).run(threading.Event(), burst=True)
    before = build_view(engine, build_id)
    with engine.begin() as conn:  # the queue hands the same job out again
        conn.execute(jobs.update().values(status="queued", lease_owner=None))

    Worker(runtime, pipeline=pipeline).run(threading.Event(), burst=True)

    assert runs == [build_id]
    assert build_view(engine, build_id) == before


def test_failing_stage_fails_the_build_and_skips_later_stages(runtime: Runtime, engine):
    build_id = new_build(engine)

    def failing_tests(ctx: BuildContext) -> Outcome:
        raise StageFailed("3 tests failed")

    Worker(runtime, pipeline=toy_pipeline({"test": failing_tests})).run(
        threading.Event(), burst=True
    )

    view = build_view(engine, build_id)
    assert view["status"] == "failed"
    assert view["error"] == "test failed: 3 tests failed"
    stages = {s["name"]: s for s in view["stages"]}
    assert stages["checkout"]["status"] == "succeeded"
    assert (stages["test"]["status"], stages["test"]["detail"]) == ("failed", "3 tests failed")
    for name in PIPELINE_STAGES[2:]:
        assert (stages[name]["status"], stages[name]["detail"]) == (
            "skipped",
            "earlier stage failed",
        )
    assert job_row(engine, build_id).status == "done"  # deterministic: not retried


def test_infrastructure_error_is_retried_and_can_then_succeed(runtime: Runtime, engine):
    build_id = new_build(engine)
    calls: list[int] = []

    def flaky(ctx: BuildContext) -> Outcome:
        calls.append(ctx.attempt)
        if len(calls) == 1:
            raise ConnectionError("registry unreachable")
        return Outcome(detail="pushed")

    worker = Worker(runtime, pipeline=toy_pipeline({"push": flaky}), backoff=no_wait)

    assert worker.run(threading.Event(), burst=True) == 2

    assert calls == [1, 2]
    view = build_view(engine, build_id)
    assert view["status"] == "succeeded"
    assert stage_map(engine, build_id)["push"]["detail"] == "pushed"
    assert job_row(engine, build_id).attempts == 2


def test_infrastructure_error_releases_the_job_with_backoff(runtime: Runtime, engine):
    build_id = new_build(engine)

    def broken(ctx: BuildContext) -> Outcome:
        raise ConnectionError("registry unreachable")

    delays: list[int] = []

    def backoff(attempt: int) -> float:
        delays.append(attempt)
        return 60.0

    worker = Worker(runtime, pipeline=toy_pipeline({"push": broken}), backoff=backoff)

    assert worker.run(threading.Event(), burst=True) == 1  # the retry is not due yet

    job = job_row(engine, build_id)
    assert delays == [1]
    assert job.status == "queued" and job.lease_owner is None
    assert job.available_at > datetime.now(UTC) + timedelta(seconds=50)
    assert "registry unreachable" in job.last_error
    assert build_view(engine, build_id)["status"] == "running"


def test_infrastructure_error_after_the_last_attempt_buries_the_job_and_fails_the_build(
    db_url, engine, make_settings
):
    runtime = runtime_with(db_url, engine, make_settings, TRAINHOOK_MAX_ATTEMPTS="2")
    build_id = new_build(engine)

    def broken(ctx: BuildContext) -> Outcome:
        raise OSError("disk full")

    worker = Worker(runtime, pipeline=toy_pipeline({"hash": broken}), backoff=no_wait)

    assert worker.run(threading.Event(), burst=True) == 2

    job = job_row(engine, build_id)
    assert (job.status, job.attempts) == ("dead", 2)
    view = build_view(engine, build_id)
    assert view["status"] == "failed"
    assert "gave up after 2 attempts" in view["error"] and "disk full" in view["error"]
    stages = stage_map(engine, build_id)
    assert stages["hash"]["status"] == "failed" and "disk full" in stages["hash"]["detail"]
    assert {stages[name]["status"] for name in PIPELINE_STAGES[3:]} == {"skipped"}


def test_expired_lease_is_reclaimed_by_another_worker(db_url, engine, make_settings):
    runtime = runtime_with(db_url, engine, make_settings, TRAINHOOK_LEASE_SECONDS="0.5")
    build_id = new_build(engine)
    crashed = runtime.queue.claim("crashed-worker")  # claimed, then never heard of again
    assert crashed is not None
    rescuer = Worker(runtime, owner="rescuer", pipeline=toy_pipeline())

    assert rescuer.run(threading.Event(), burst=True) == 0  # the lease still holds
    time.sleep(0.6)
    assert rescuer.run(threading.Event(), burst=True) == 1

    assert build_view(engine, build_id)["status"] == "succeeded"
    queued = stage_map(engine, build_id)["queued"]["detail"]
    assert "rescuer" in queued and "attempt 2" in queued
    assert runtime.queue.heartbeat(crashed) is False


def test_lost_lease_stops_at_the_next_stage_boundary_without_a_final_status(
    db_url, engine, make_settings
):
    runtime = runtime_with(db_url, engine, make_settings, TRAINHOOK_LEASE_SECONDS="0.6")
    build_id = new_build(engine)
    ran: list[str] = []

    def slow_tests(ctx: BuildContext) -> Outcome:
        with engine.begin() as conn:  # meanwhile another worker took the job over
            conn.execute(jobs.update().values(lease_owner="thief"))
        time.sleep(0.8)  # several heartbeats: the lease loss is noticed
        return Outcome()

    def hash_(ctx: BuildContext) -> Outcome:
        ran.append("hash")
        return Outcome()

    worker = Worker(runtime, pipeline=toy_pipeline({"test": slow_tests, "hash": hash_}))
    job = runtime.queue.claim(worker.owner)
    assert job is not None

    assert worker.process(job, threading.Event()) == "lease lost"

    assert ran == []
    view = build_view(engine, build_id)
    assert (view["status"], view["finished_at"], view["error"]) == ("running", None, None)
    assert events(engine, build_id, "test") == [("test", "running")]  # nothing after the loss
    assert job_row(engine, build_id).lease_owner == "thief"


def test_stop_lets_the_current_stage_finish_then_releases_the_job(runtime: Runtime, engine):
    build_id = new_build(engine)
    stop = threading.Event()
    ran: list[str] = []

    def tests_then_sigterm(ctx: BuildContext) -> Outcome:
        stop.set()
        time.sleep(0.2)
        ran.append("test")
        return Outcome(detail="finished despite the stop")

    def hash_(ctx: BuildContext) -> Outcome:
        ran.append("hash")
        return Outcome()

    pipeline = toy_pipeline({"test": tests_then_sigterm, "hash": hash_})

    assert Worker(runtime, pipeline=pipeline).run(stop) == 1

    assert ran == ["test"]
    stages = stage_map(engine, build_id)
    assert stages["test"]["status"] == "succeeded"
    assert stages["hash"]["status"] == "pending"
    assert build_view(engine, build_id)["status"] == "running"
    job = job_row(engine, build_id)
    assert (job.status, job.lease_owner) == ("queued", None)

    Worker(runtime, pipeline=toy_pipeline()).run(threading.Event(), burst=True)
    assert build_view(engine, build_id)["status"] == "succeeded"


def test_graceful_stops_never_use_up_the_attempts(db_url, engine, make_settings):
    # Rolling restarts stop a long build again and again: it is no failure, never dead-lettered.
    runtime = runtime_with(db_url, engine, make_settings, TRAINHOOK_MAX_ATTEMPTS="2")
    build_id = new_build(engine)
    for _ in range(4):
        stop = threading.Event()

        def stopped_during_test(ctx: BuildContext, stop: threading.Event = stop) -> Outcome:
            stop.set()
            return Outcome()

        pipeline = toy_pipeline({"test": stopped_during_test})
        assert Worker(runtime, pipeline=pipeline).run(stop) == 1
        assert job_row(engine, build_id).status == "queued"
        assert job_row(engine, build_id).attempts == 0

    Worker(runtime, pipeline=toy_pipeline()).run(threading.Event(), burst=True)
    assert build_view(engine, build_id)["status"] == "succeeded"
    assert job_row(engine, build_id).attempts == 1


def test_burst_drains_the_queue_then_returns(runtime: Runtime, engine):
    ids = [new_build(engine, sha=f"{i:040x}") for i in range(5)]

    assert Worker(runtime, pipeline=toy_pipeline()).run(threading.Event(), burst=True) == 5

    assert {build_view(engine, i)["status"] for i in ids} == {"succeeded"}


def test_worker_waits_for_new_jobs_until_stopped(
    runtime: Runtime, engine, monkeypatch: pytest.MonkeyPatch
):
    stop, idle = threading.Event(), threading.Event()
    queue_wait = runtime.queue.wait

    def waiting(timeout: float) -> None:
        idle.set()  # the worker found the queue empty and waits instead of returning
        queue_wait(timeout)

    monkeypatch.setattr(runtime.queue, "wait", waiting)
    worker = Worker(runtime, pipeline=toy_pipeline())
    thread = threading.Thread(target=worker.run, args=(stop,))
    thread.start()
    try:
        assert idle.wait(10), "the worker never waited on the empty queue"
        assert thread.is_alive()
        build_id = new_build(engine)
        runtime.queue.notify([build_id])
        deadline = time.monotonic() + 10
        while build_view(engine, build_id)["status"] != "succeeded":
            assert time.monotonic() < deadline, "the waiting worker never ran the build"
            time.sleep(0.05)
    finally:
        stop.set()
        thread.join(timeout=5)
    assert not thread.is_alive()


def test_build_of_a_repository_no_longer_configured_fails(runtime: Runtime, engine):
    build_id = new_build(engine, repo="someone/else")

    Worker(runtime, pipeline=toy_pipeline()).run(threading.Event(), burst=True)

    view = build_view(engine, build_id)
    assert view["status"] == "failed"
    assert "'someone/else'" in view["error"] and "not configured" in view["error"]
    assert {stage_map(engine, build_id)[n]["status"] for n in PIPELINE_STAGES} == {"skipped"}


@pytest.mark.parametrize(
    "names", [("test", "checkout"), ("checkout", "checkout"), ("checkout", "lint")]
)
def test_pipeline_refuses_stages_out_of_contract_order(names: tuple[str, ...]):
    with pytest.raises(ValueError, match="stage"):
        Pipeline([SingleStage(name, lambda ctx: Outcome()) for name in names])


def test_build_cancelled_while_running_stops_at_the_next_stage_and_stays_cancelled(
    runtime: Runtime, engine
):
    build_id = new_build(engine)
    ran: list[int] = []

    def tests_then_cancel(ctx: BuildContext) -> Outcome:
        with engine.begin() as conn:  # someone presses "cancel" on the status page
            mark_finished(conn, build_id, "cancelled", error="cancelled by alice")
        return Outcome()

    pipeline = toy_pipeline({"test": tests_then_cancel, "hash": counting(ran)})

    assert Worker(runtime, pipeline=pipeline).run(threading.Event(), burst=True) == 1

    assert ran == []
    view = build_view(engine, build_id)
    assert (view["status"], view["error"]) == ("cancelled", "cancelled by alice")
    stages = stage_map(engine, build_id)
    assert stages["test"]["status"] == "succeeded"
    assert (stages["hash"]["status"], stages["hash"]["detail"]) == (
        "skipped",
        "build cancelled while it ran",
    )
    assert job_row(engine, build_id).status == "done"

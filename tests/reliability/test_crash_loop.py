"""A job that kills every worker running it ends dead after TRAINHOOK_MAX_ATTEMPTS, instead of
being taken up again after each lease forever (found by the state machine in
test_state_machine.py: a stage ran on a fourth attempt with TRAINHOOK_MAX_ATTEMPTS=3)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest
import sqlalchemy as sa

from tests.queue.conftest import build_status, job, new_build
from trainhook.runtime import build_runtime
from trainhook.settings import Settings
from worker.context import BuildContext
from worker.loop import Worker
from worker.pipeline import Pipeline
from worker.stage import Outcome, SingleStage

LEASE = 0.3


class WorkerKilled(BaseException):
    """The worker process is gone mid-stage: its own error handling never runs."""


def test_a_job_that_kills_every_worker_is_dead_lettered_after_max_attempts(
    db_url: str, engine: sa.Engine, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(
        db_url,
        env={"TRAINHOOK_LEASE_SECONDS": str(LEASE), "TRAINHOOK_MAX_ATTEMPTS": "2"},
    )
    runtime = build_runtime(settings, engine)
    build_id = new_build(engine)
    trains: list[int] = []

    def train(ctx: BuildContext) -> Outcome:
        trains.append(ctx.attempt)
        raise WorkerKilled("out of memory")

    pipeline = Pipeline([SingleStage("train", train)])
    for attempt in (1, 2):
        with pytest.raises(WorkerKilled):
            Worker(runtime, owner=f"w{attempt}", pipeline=pipeline).run(threading.Event(), True)
        time.sleep(LEASE + 0.1)  # nobody renews the dead worker's lease: it runs out

    Worker(runtime, owner="w3", pipeline=pipeline).run(threading.Event(), burst=True)

    assert trains == [1, 2]
    build = build_status(engine, build_id)
    assert build.status == "failed"
    assert build.error.startswith("gave up after 2 attempts: the last attempt ended without")
    assert job(engine, build_id).status == "dead"

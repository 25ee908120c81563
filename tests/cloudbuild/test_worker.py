"""The worker running the Cloud Build builder: final build statuses, cancellation both ways,
a worker stopping mid-build and the next one adopting the same Cloud Build."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from tests.cloudbuild.conftest import make_builder, model_dir
from tests.cloudbuild.fake_server import Plan
from tests.worker.conftest import build_view, new_build
from trainhook.builds import mark_finished
from trainhook.runtime import build_runtime
from trainhook.settings import Settings
from worker.context import BuildContext, CacheKeys
from worker.loop import Worker
from worker.pipeline import Pipeline
from worker.stage import Outcome, SingleStage


def pipeline_with(builder: Any, tmp_path: Path) -> Pipeline:
    """checkout..train as stand-ins that leave a source tree and a model, then `builder`."""

    def checkout(ctx: BuildContext) -> Outcome:
        ctx.source = tmp_path / f"src-{ctx.build.id}-{ctx.attempt}"
        ctx.source.mkdir(parents=True)
        (ctx.source / "app.py").write_text("# app\n")
        return Outcome(detail="exported")

    def train(ctx: BuildContext) -> Outcome:
        folder = tmp_path / f"model-{ctx.build.id}-{ctx.attempt}"
        ctx.model_dir = folder if folder.is_dir() else model_dir(folder)
        ctx.keys = CacheKeys(deps="d" * 64, nltk="n" * 64, model="m" * 64)
        return Outcome(detail="trained", cache="miss")

    def ok(ctx: BuildContext) -> Outcome:
        return Outcome(detail="ok")

    return Pipeline(
        [
            SingleStage("checkout", checkout),
            SingleStage("test", ok),
            SingleStage("hash", ok),
            SingleStage("train", train),
            builder,
        ]
    )


def run_worker(
    settings: Settings,
    engine: sa.Engine,
    tmp_path: Path,
    on_poll: Callable[[int], None] | None = None,
    stop: threading.Event | None = None,
) -> Any:
    polls = iter(range(1, 10_000))

    def sleep(_seconds: float) -> None:
        if on_poll:
            on_poll(next(polls))

    builder = make_builder(settings, sleep=sleep)
    worker = Worker(
        build_runtime(settings, engine),
        pipeline=pipeline_with(builder, tmp_path),
        backoff=lambda _: 0,
    )
    return worker.run(stop or threading.Event(), burst=True)


def test_a_successful_cloud_build_makes_a_succeeded_build(settings, db, fake, tmp_path):
    build_id = new_build(db, "c" * 40)
    run_worker(settings, db, tmp_path)
    view = build_view(db, build_id)
    assert view["status"] == "succeeded"
    assert [s["status"] for s in view["stages"][6:]] == ["succeeded"] * 4


def test_a_failed_cloud_build_makes_a_failed_build_with_its_reason(settings, db, fake, tmp_path):
    fake.plan = Plan(outcomes={"push": "FAILURE"})
    build_id = new_build(db, "c" * 40)
    run_worker(settings, db, tmp_path)
    view = build_view(db, build_id)
    assert view["status"] == "failed"
    assert view["error"].startswith("push failed: Cloud Build")
    assert "step push failed" in view["error"]
    assert {s["name"]: s["status"] for s in view["stages"]}["deploy"] == "skipped"


def test_a_cloud_build_cancelled_elsewhere_makes_a_cancelled_build(settings, db, fake, tmp_path):
    fake.plan = Plan(cancel_after_gets=3)
    build_id = new_build(db, "c" * 40)
    run_worker(settings, db, tmp_path)
    view = build_view(db, build_id)
    assert view["status"] == "cancelled"
    assert "was cancelled" in view["error"]


def test_a_build_superseded_while_polling_cancels_its_cloud_build(settings, db, fake, tmp_path):
    build_id = new_build(db, "c" * 40)

    def supersede(poll: int) -> None:
        if poll == 2:
            with db.begin() as conn:
                mark_finished(conn, build_id, "superseded", error="superseded by build #99")

    run_worker(settings, db, tmp_path, on_poll=supersede)

    (remote,) = fake.builds.values()
    assert fake.cancels == [remote.id] and remote.snapshot()["status"] == "CANCELLED"
    assert build_view(db, build_id)["status"] == "superseded"


def test_a_worker_stopping_mid_build_hands_it_to_the_next_worker(settings, db, fake, tmp_path):
    build_id = new_build(db, "c" * 40)
    stop = threading.Event()

    run_worker(settings, db, tmp_path, on_poll=lambda n: stop.set() if n == 2 else None, stop=stop)

    assert build_view(db, build_id)["status"] == "running"  # released, not failed
    run_worker(settings, db, tmp_path)

    assert len(fake.builds) == 1  # the second worker adopted it
    assert fake.cancels == []
    assert build_view(db, build_id)["status"] == "succeeded"

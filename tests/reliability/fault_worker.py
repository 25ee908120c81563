"""A real `trainhook worker` process for the fault tests, killed or frozen by the test.

`python -m tests.reliability.fault_worker MODE SYNC_DIR NAME`, settings from the TRAINHOOK_*
environment as for `trainhook worker`; runs until SIGTERM. Every stage run appends
"BUILD STAGE" to SYNC_DIR/runs-NAME, and SYNC_DIR/ready-NAME appears once it is up.

MODE:
- `checkout`: the real checkout stage (mirror fetch + export), then toy stages.
- `cloudbuild`: toy checkout..train leaving a source tree and a model, then the real Cloud
  Build builder over the google-cloud-build client (TRAINHOOK_CLOUDBUILD_ENDPOINT).
- `toy`: toy stages only.
- `die-before-ack`: toy stages; the process is killed (SIGKILL) at the moment it would
  acknowledge a finished job's Pub/Sub message: the job is done in the database, the ack
  never leaves.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from trainhook.settings import load_settings
from worker.context import BuildContext, CacheKeys
from worker.loop import run_worker_process
from worker.pipeline import Pipeline
from worker.stage import Outcome, SingleStage, Step

TOY = ("checkout", "test", "hash", "train", "build", "push", "deploy", "vertex")


def logged(sync: Path, name: str, stage: str, run: Callable[[BuildContext], Outcome]) -> Step:
    def step(ctx: BuildContext) -> Outcome:
        with (sync / f"runs-{name}").open("a") as runs:
            runs.write(f"{ctx.build.id} {stage}\n")
        return run(ctx)

    return SingleStage(stage, step)


def ok(ctx: BuildContext) -> Outcome:
    return Outcome(detail="ok")


def source_and_model(work: Path) -> tuple[Callable[..., Outcome], Callable[..., Outcome]]:
    """Stand-ins for checkout and train that leave what the builder bundles."""

    def checkout(ctx: BuildContext) -> Outcome:
        ctx.source = work / f"src-{ctx.build.id}-{os.getpid()}"
        ctx.source.mkdir(parents=True, exist_ok=True)
        (ctx.source / "app.py").write_text("# the served app\n")
        return Outcome(detail="exported")

    def train(ctx: BuildContext) -> Outcome:
        model = work / f"model-{ctx.build.id}-{os.getpid()}"
        model.mkdir(parents=True, exist_ok=True)
        for file in ("model.joblib", "vectorizer.joblib"):
            (model / file).write_bytes(b"model bytes")
        (model / "metrics.json").write_text(json.dumps({"macro_f1": 0.8}))
        (model / "meta.json").write_text(json.dumps({"key": "m" * 64, "build_id": 1}))
        ctx.model_dir = model
        ctx.keys = CacheKeys(deps="d" * 64, nltk="n" * 64, model="m" * 64)
        ctx.metrics = {"macro_f1": 0.8}
        return Outcome(detail="trained", cache="miss")

    return checkout, train


def pipeline_for(mode: str, sync: Path, name: str) -> Pipeline:
    if mode == "checkout":
        from worker.checkout import checkout_stage

        stages: dict[str, Callable[[BuildContext], Outcome]] = {"checkout": checkout_stage}
        return Pipeline([logged(sync, name, s, stages.get(s, ok)) for s in TOY])
    if mode == "cloudbuild":
        from worker.cloudbuild.builder import make_cloud_builder

        checkout, train = source_and_model(sync / f"work-{name}")
        stages = {"checkout": checkout, "train": train}
        before: list[Any] = [logged(sync, name, s, stages.get(s, ok)) for s in TOY[:4]]
        return Pipeline([*before, make_cloud_builder(load_settings())])
    return Pipeline([logged(sync, name, s, ok) for s in TOY])


def die_at_the_ack() -> None:
    from trainhook.queue.pubsub import PubSubQueue

    def ack(self: PubSubQueue, ack_id: str | None) -> None:
        os.kill(os.getpid(), signal.SIGKILL)  # the job is done in the database; no ack leaves

    PubSubQueue._ack = ack  # type: ignore[method-assign]


def main(mode: str, sync: Path, name: str) -> int:
    if mode == "die-before-ack":
        die_at_the_ack()
    pipeline = pipeline_for(mode, sync, name)
    (sync / f"ready-{name}").touch()
    print(run_worker_process(load_settings(), pipeline=pipeline), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], Path(sys.argv[2]), sys.argv[3]))

"""A worker in its own process, for the multi-process tests.

`python -m tests.worker.worker_script drain SYNC_DIR NAME`: wait for SYNC_DIR/go, drain the
queue with a toy pipeline, print the number of jobs run.
`python -m tests.worker.worker_script slow SYNC_DIR NAME`: run until SIGTERM; the checkout
stage touches SYNC_DIR/checkout-started and takes 1.5 s.
Settings come from the TRAINHOOK_* environment, as for `trainhook worker`.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from trainhook.settings import load_settings
from worker.context import BuildContext
from worker.loop import run_worker_process
from worker.pipeline import Pipeline
from worker.stage import Outcome, SingleStage

STAGES = ("checkout", "test", "hash", "train", "build", "push", "deploy", "vertex")


def main(mode: str, sync: Path, name: str) -> int:
    def checkout(ctx: BuildContext) -> Outcome:
        if mode == "slow":
            (sync / "checkout-started").touch()
            time.sleep(1.5)
        else:
            time.sleep(0.02)  # long enough for the other process to want the same job
        return Outcome(detail=f"run by {name}")

    def ok(ctx: BuildContext) -> Outcome:
        return Outcome()

    pipeline = Pipeline(
        [SingleStage(stage, checkout if stage == "checkout" else ok) for stage in STAGES]
    )
    if mode == "drain":
        (sync / f"ready-{name}").touch()
        deadline = time.monotonic() + 30
        while not (sync / "go").exists():
            if time.monotonic() > deadline:
                return 3
            time.sleep(0.01)
    processed = run_worker_process(load_settings(), burst=mode == "drain", pipeline=pipeline)
    print(processed, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], Path(sys.argv[2]), sys.argv[3]))

"""A worker in its own process, for the crash and shutdown tests over Pub/Sub.

`python -m tests.queue.worker_process SYNC_DIR NAME TRAIN_SECONDS`: run `trainhook worker`'s
loop (until SIGTERM) with a toy pipeline whose `train` stage touches SYNC_DIR/train-NAME,
takes TRAIN_SECONDS, then touches SYNC_DIR/trained-NAME. Every stage run appends "BUILD STAGE"
to SYNC_DIR/runs-NAME.
Settings come from the TRAINHOOK_* environment, as for `trainhook worker`.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path

from trainhook.settings import load_settings
from worker.context import BuildContext
from worker.loop import run_worker_process
from worker.pipeline import Pipeline
from worker.stage import Outcome, SingleStage

STAGES = ("checkout", "test", "hash", "train", "build", "push", "deploy", "vertex")


def main(sync: Path, name: str, train_seconds: float) -> int:
    def stage(stage_name: str) -> Callable[[BuildContext], Outcome]:
        def run(ctx: BuildContext) -> Outcome:
            with (sync / f"runs-{name}").open("a") as runs:
                runs.write(f"{ctx.build.id} {stage_name}\n")
            if stage_name == "train":
                (sync / f"train-{name}").touch()
                time.sleep(train_seconds)
                (sync / f"trained-{name}").touch()
            return Outcome(detail=f"run by {name}")

        return run

    pipeline = Pipeline([SingleStage(s, stage(s), resumable=True) for s in STAGES])
    (sync / f"ready-{name}").touch()
    print(run_worker_process(load_settings(), pipeline=pipeline), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]), sys.argv[2], float(sys.argv[3])))

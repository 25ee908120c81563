"""A soak worker: `trainhook worker`'s real loop (claim, lease, heartbeat, settle) in its own
process, with a fast toy pipeline.

    python -m bench.soak.worker TRAIN_LOG MODELS TRAIN_MS

Settings come from the TRAINHOOK_* environment, as for `trainhook worker`. Every stage is
instant except `train`, which keeps the real stage's contract with the model cache: a
model stored for the build's training key is reused (cache hit, nothing trained); else it
"trains" for TRAIN_MS, appends one line `BUILD KEY PID TIME` to TRAIN_LOG (O_APPEND: one write,
so lines from concurrent processes never interleave), then stores the model as MODELS/KEY
(temp file + rename, holding the PID). A line is a finished training: a worker killed
before it wrote one trained nothing, and the rerun is not a duplicate.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sys
import time
from pathlib import Path

from trainhook.settings import load_settings
from worker.context import BuildContext
from worker.loop import run_worker_process
from worker.pipeline import Pipeline
from worker.stage import Outcome, SingleStage, StageFunction

STAGES = ("checkout", "test", "hash", "train", "build", "push", "deploy", "vertex")


def training_key(sha: str) -> str:
    """The model key of a build: derived from its commit only (data and params are fixed)."""
    return hashlib.sha256(f"soak-model:{sha}".encode()).hexdigest()[:32]


def train_stage(train_log: Path, models: Path, seconds: float) -> StageFunction:
    def train(ctx: BuildContext) -> Outcome:
        key = training_key(ctx.build.sha)
        model = models / key
        if model.exists():
            return Outcome(detail=f"model {key} reused (stored by pid {model.read_text()})",
                           cache="hit")  # fmt: skip
        time.sleep(seconds)
        line = f"{ctx.build.id} {key} {os.getpid()} {time.time():.6f}\n".encode()
        fd = os.open(train_log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)
        temp = models / f".{key}.{os.getpid()}"
        temp.write_text(str(os.getpid()))
        os.replace(temp, model)
        return Outcome(detail=f"model {key} trained", cache="miss")

    return train


def instant(ctx: BuildContext) -> Outcome:
    return Outcome(detail="ok")


def pipeline(train_log: Path, models: Path, train_seconds: float) -> Pipeline:
    steps = []
    for name in STAGES:
        fn = train_stage(train_log, models, train_seconds) if name == "train" else instant
        # As in the real pipeline: only `test` resumes; `train` relies on the model cache.
        steps.append(SingleStage(name, fn, resumable=name == "test"))
    return Pipeline(steps)


def main(argv: list[str]) -> int:
    train_log, models, train_ms = Path(argv[0]), Path(argv[1]), float(argv[2])
    logging.basicConfig(
        level=os.environ.get("SOAK_LOG_LEVEL", "WARNING"),
        format=f"%(asctime)s worker {os.getpid()} %(levelname)s %(name)s: %(message)s",
    )
    models.mkdir(parents=True, exist_ok=True)
    run_worker_process(load_settings(), pipeline=pipeline(train_log, models, train_ms / 1000))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""`trainhook worker` with a no-op pipeline (no stages): claim, mark started, finish, settle.
Settings come from the TRAINHOOK_* environment. Used by bench/queue/run.py."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from trainhook.settings import load_settings
from worker.loop import run_worker_process
from worker.pipeline import Pipeline

if __name__ == "__main__":
    logging.basicConfig(
        level=os.environ.get("BENCH_LOG", "WARNING"),
        format="%(asctime)s %(process)d %(name)s %(message)s",
    )
    run_worker_process(load_settings(), pipeline=Pipeline([]))

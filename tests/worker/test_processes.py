"""Workers as real processes: concurrency on one database, and SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.conftest import REPO_ROOT, new_pg_database
from tests.worker.conftest import build_view, job_row, new_build, stage_map, toy_pipeline
from trainhook.db import reading
from trainhook.models import stage_events
from trainhook.runtime import build_runtime
from trainhook.settings import Settings
from worker.loop import Worker


def spawn(settings: Settings, mode: str, sync: Path, name: str) -> subprocess.Popen[str]:
    env = {
        **os.environ,
        "TRAINHOOK_HOME": str(settings.home),
        "TRAINHOOK_CONFIG": str(settings.config_path),
        "TRAINHOOK_DATABASE_URL": settings.database_url,
        "TRAINHOOK_POLL_INTERVAL": "0.05",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "tests.worker.worker_script", mode, str(sync), name],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for(path: Path, procs: list[subprocess.Popen[str]], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        for proc in procs:
            if proc.poll() is not None:
                pytest.fail(f"worker exited early: {proc.communicate()[1]}")
        assert time.monotonic() < deadline, f"{path.name} never appeared"
        time.sleep(0.02)


@pytest.mark.postgres
def test_two_worker_processes_never_run_the_same_job(pg_server, make_settings, tmp_path):
    url = new_pg_database(pg_server)
    settings = make_settings(url)
    engine = sa.create_engine(url)
    ids = [new_build(engine, sha=f"{i:040x}") for i in range(20)]
    sync = tmp_path / "sync"
    sync.mkdir()
    procs = [spawn(settings, "drain", sync, name) for name in ("one", "two")]
    for name in ("one", "two"):
        wait_for(sync / f"ready-{name}", procs)
    (sync / "go").touch()
    outputs = [proc.communicate(timeout=60) for proc in procs]
    assert [p.returncode for p in procs] == [0, 0], [err for _, err in outputs]

    counts = [int(out.strip()) for out, _ in outputs]
    assert sum(counts) == 20
    assert all(count > 0 for count in counts), f"one worker did all the work: {counts}"
    with reading(engine) as conn:
        checkout_runs = Counter(
            conn.execute(
                sa.select(stage_events.c.build_id).where(
                    stage_events.c.stage == "checkout", stage_events.c.status == "running"
                )
            ).scalars()
        )
    assert checkout_runs == dict.fromkeys(ids, 1)
    runners = Counter(stage_map(engine, i)["checkout"]["detail"] for i in ids)
    assert runners == {"run by one": counts[0], "run by two": counts[1]}
    assert {build_view(engine, i)["status"] for i in ids} == {"succeeded"}
    engine.dispose()


def test_sigterm_lets_the_current_stage_finish(db_url, engine, make_settings, tmp_path):
    settings = make_settings(db_url)
    build_id = new_build(engine)
    sync = tmp_path / "sync"
    sync.mkdir()
    proc = spawn(settings, "slow", sync, "one")
    wait_for(sync / "checkout-started", [proc])

    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)

    assert proc.returncode == 0, err
    assert out.strip() == "1"
    stages = stage_map(engine, build_id)
    assert (stages["checkout"]["status"], stages["checkout"]["detail"]) == (
        "succeeded",
        "run by one",
    )
    assert stages["test"]["status"] == "pending"
    assert build_view(engine, build_id)["status"] == "running"
    job = job_row(engine, build_id)
    assert (job.status, job.lease_owner) == ("queued", None)  # released for another worker

    runtime = build_runtime(settings, engine)
    Worker(runtime, pipeline=toy_pipeline()).run(threading.Event(), burst=True)
    assert build_view(engine, build_id)["status"] == "succeeded"

"""Worker faults on one machine, with real components: the worker's own PostgreSQL restarted
mid-job, a worker process killed (SIGKILL, with its children) mid-checkout, a worker process
frozen (SIGSTOP) past its lease while a stage runs, and a Pub/Sub ack that never leaves a
worker killed after finishing. Each job finishes once, statuses never regress, the surviving
worker goes on."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from tests.conftest import REPO_ROOT, SECRET
from tests.queue import conftest as queue_fixtures
from tests.queue.conftest import Counter, Stack, workers_running
from tests.support.postgres import PostgresServer
from tests.worker.conftest import build_view, job_row, new_build
from trainhook.db import make_engine, reading
from trainhook.models import builds, stage_events
from trainhook.runtime import build_runtime
from trainhook.settings import Settings
from worker.checkout import checkout_stage
from worker.context import BuildContext
from worker.loop import Worker
from worker.stage import Outcome

# The Pub/Sub fixtures (the emulator, PostgreSQL + a fresh topic and subscription).
pubsub_emulator = queue_fixtures.pubsub_emulator
pstack = queue_fixtures.pstack

RANK = {"queued": 0, "running": 1, "succeeded": 2, "failed": 2, "cancelled": 2}
FINAL = ("succeeded", "failed", "skipped")


def wait_until(
    check: Callable[[], bool], timeout: float, what: str, procs: Sequence[Any] = ()
) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        for proc in procs:
            if proc.poll() is not None:
                pytest.fail(f"a worker exited early ({proc.returncode}): {proc.stderr.read()}")
        assert time.monotonic() < deadline, f"{what}: not within {timeout}s"
        time.sleep(0.02)


def stage_events_of(engine: sa.Engine, build_id: int) -> list[tuple[str, str]]:
    with reading(engine) as conn:
        rows = conn.execute(
            sa.select(stage_events.c.stage, stage_events.c.status)
            .where(stage_events.c.build_id == build_id)
            .order_by(stage_events.c.id)
        )
        return [(stage, status) for stage, status in rows]


def finals(engine: sa.Engine, build_id: int, stage: str) -> list[str]:
    return [s for name, s in stage_events_of(engine, build_id) if name == stage and s in FINAL]


def status_of(engine: sa.Engine, build_id: int) -> str:
    return str(build_view(engine, build_id)["status"])


# -- the worker's database restarted mid-job -----------------------------------------------


class StatusWatcher:
    """Reads a build's status every few milliseconds from its own engine (errors while the
    database is down are skipped) and keeps every change it saw."""

    def __init__(self, url: str, build_id: int) -> None:
        self.engine = make_engine(url)
        self.build_id = build_id
        self.seen: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.01):
            try:
                with self.engine.connect() as conn:
                    status = conn.execute(
                        sa.select(builds.c.status).where(builds.c.id == self.build_id)
                    ).scalar_one()
            except Exception:
                continue
            if not self.seen or self.seen[-1] != status:
                self.seen.append(str(status))

    def __enter__(self) -> StatusWatcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.engine.dispose()


@pytest.mark.postgres
def test_database_restarted_mid_job_the_job_finishes_once_and_the_worker_survives(
    own_pg: PostgresServer,
    make_settings: Callable[..., Settings],
    caplog: pytest.LogCaptureFixture,
):
    url = own_pg.url("trainhook") + "?connect_timeout=2"
    engine = make_engine(url)
    settings = make_settings(
        url, env={"TRAINHOOK_LEASE_SECONDS": "2", "TRAINHOOK_POLL_INTERVAL": "0.05"}
    )
    first = new_build(engine)
    in_train, down = threading.Event(), threading.Event()

    def train(ctx: BuildContext) -> Outcome:
        in_train.set()
        # The stage ends while the database is away: its result cannot be recorded.
        assert down.wait(10)
        return Outcome(detail="trained")

    counter = Counter({"train": train})
    with (
        StatusWatcher(url, first) as watcher,
        workers_running([build_runtime(settings, engine)], counter.pipeline(resumable=True),
                        backoff=0.2),
    ):  # fmt: skip
        assert in_train.wait(10)
        own_pg.stop("immediate")  # every connection dies, mid-transaction for some
        down.set()
        # The worker fails to record, to settle, then to claim: it is back at its loop,
        # retrying, before the database returns.
        wait_until(
            lambda: any("claim failed" in r.getMessage() for r in caplog.records),
            30,
            "the worker retrying its claim during the outage",
        )
        own_pg.resume()
        wait_until(lambda: status_of(engine, first) == "succeeded", 30, "first build done")
        second = new_build(engine, sha="b" * 40)  # the same worker goes on
        wait_until(lambda: status_of(engine, second) == "succeeded", 15, "second build done")

    # Statuses never regressed (queued → running → succeeded), the build ended once.
    assert [RANK[s] for s in watcher.seen] == sorted(RANK[s] for s in watcher.seen)
    assert watcher.seen[-1] == "succeeded"
    job = job_row(engine, first)
    assert (job.status, job.attempts) == ("done", 2)
    # Stages recorded as succeeded before the outage were not redone (checkout always is);
    # train, whose result was lost with the database, ran again; each has one final status.
    assert {s: counter.count(first, s) for s in ("checkout", "test", "hash", "train")} == {
        "checkout": 2, "test": 1, "hash": 1, "train": 2,
    }  # fmt: skip
    for stage in ("test", "hash", "train", "build", "push", "deploy", "vertex"):
        assert finals(engine, first, stage) == ["succeeded"], stage
    assert counter.count(first, "vertex") == 1
    engine.dispose()


# -- worker processes killed or frozen -------------------------------------------------------


def spawn(
    module: str, args: list[str], env: dict[str, str], *, group: bool = True
) -> subprocess.Popen[str]:
    """A worker process; in a session of its own so that a kill takes its git children too,
    as a machine or container going away would."""
    return subprocess.Popen(
        [sys.executable, "-m", module, *args],
        cwd=REPO_ROOT,
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=group,
    )


def kill_group(proc: subprocess.Popen[str]) -> None:
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)


def stop(proc: subprocess.Popen[str]) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        kill_group(proc)
        return proc.returncode


def sql_env(settings: Settings, **extra: str) -> dict[str, str]:
    """The environment of `trainhook worker` for `settings`, SQL queue, short lease."""
    return {
        "TRAINHOOK_HOME": str(settings.home),
        "TRAINHOOK_CONFIG": str(settings.config_path),
        "TRAINHOOK_DATABASE_URL": settings.database_url,
        "TEST_WEBHOOK_SECRET": SECRET,
        "TRAINHOOK_LEASE_SECONDS": "2",
        "TRAINHOOK_POLL_INTERVAL": "0.05",
        **extra,
    }


def runs(sync: Path, name: str) -> list[str]:
    path = sync / f"runs-{name}"
    return [line.split()[1] for line in path.read_text().splitlines()] if path.exists() else []


def test_worker_killed_mid_checkout_finishes_the_build_once(
    origin, make_settings, sqlite_url, sqlite_engine, tmp_path: Path
):
    # Enough data that fetching and exporting the commit takes a while.
    sha = origin.commit({"data/big.bin": os.urandom(12 * 1024 * 1024), "app.py": "# app\n"})
    settings = make_settings(sqlite_url, clone_url=origin.url)
    build_id = new_build(sqlite_engine, sha)
    sync = tmp_path / "sync"
    sync.mkdir()
    env = sql_env(settings)
    doomed = spawn("tests.reliability.fault_worker", ["checkout", str(sync), "doomed"], env)

    def checkout_started() -> bool:
        return ("checkout", "running") in stage_events_of(sqlite_engine, build_id)

    wait_until(checkout_started, 30, "checkout started", [doomed])
    time.sleep(0.2)
    kill_group(doomed)  # the worker and its git processes, mid-checkout
    assert finals(sqlite_engine, build_id, "checkout") == [], "checkout ended before the kill"

    rescuer = spawn("tests.reliability.fault_worker", ["checkout", str(sync), "rescuer"], env)
    try:
        wait_until(
            lambda: status_of(sqlite_engine, build_id) == "succeeded", 40, "rescued", [rescuer]
        )
    finally:
        assert stop(rescuer) == 0
    assert runs(sync, "doomed") == ["checkout"]
    assert runs(sync, "rescuer") == [
        "checkout", "test", "hash", "train", "build", "push", "deploy", "vertex",
    ]  # fmt: skip
    job = job_row(sqlite_engine, build_id)
    assert (job.status, job.attempts) == ("done", 2)
    checkout = [s for name, s in stage_events_of(sqlite_engine, build_id) if name == "checkout"]
    assert checkout == ["running", "running", "succeeded"]
    # Nothing the killed checkout left half-made outlives the rescue: no partial clone beside
    # the mirror, no partial export beside the rescuer's.
    mirrors = settings.mirrors_dir
    repo = settings.repos[0]
    assert sorted(p.name for p in mirrors.iterdir()) == [
        f"{repo.slug}.git",
        f"{repo.slug}.git.lock",
    ]
    exports = [p for p in (settings.work_dir / repo.slug).iterdir() if p.is_dir()]
    assert len(exports) == 1, exports


def test_a_worker_frozen_past_its_lease_writes_nothing_after_another_finished_the_build(
    make_settings, sqlite_url, sqlite_engine, tmp_path: Path
):
    settings = make_settings(sqlite_url)
    build_id = new_build(sqlite_engine)
    sync = tmp_path / "sync"
    sync.mkdir()
    env = sql_env(settings)
    frozen = spawn("tests.queue.worker_process", [str(sync), "frozen", "1.0"], env)
    wait_until((sync / "train-frozen").exists, 30, "frozen worker in train", [frozen])
    os.kill(frozen.pid, signal.SIGSTOP)  # a long pause (GC, VM migration): no heartbeat
    try:
        rescuer = spawn("tests.queue.worker_process", [str(sync), "rescuer", "0.1"], env)
        try:
            wait_until(
                lambda: status_of(sqlite_engine, build_id) == "succeeded", 30, "taken over",
                [rescuer],
            )  # fmt: skip
            settled = stage_events_of(sqlite_engine, build_id)
        finally:
            assert stop(rescuer) == 0
    finally:
        os.kill(frozen.pid, signal.SIGCONT)  # it wakes up with its stage done
    # Its stage has returned: whatever it would write comes before it exits (stop waits).
    wait_until((sync / "trained-frozen").exists, 30, "frozen worker's stage returned", [frozen])
    assert stop(frozen) == 0

    assert stage_events_of(sqlite_engine, build_id) == settled, "the frozen worker wrote"
    view = build_view(sqlite_engine, build_id)
    assert view["status"] == "succeeded"
    assert {s["status"] for s in view["stages"][2:]} == {"succeeded"}
    assert job_row(sqlite_engine, build_id).attempts == 2


# -- a Pub/Sub ack that never leaves ---------------------------------------------------------


@pytest.mark.postgres
def test_a_lost_ack_redelivers_a_finished_job_that_is_not_built_again(
    pstack: Stack, tmp_path: Path
):
    env = {
        **queue_fixtures.process_env(pstack, tmp_path),
        "PUBSUB_EMULATOR_HOST": os.environ["PUBSUB_EMULATOR_HOST"],
        "TRAINHOOK_LEASE_SECONDS": "2",
    }
    build_id = queue_fixtures.new_build(pstack.engine)
    queue_fixtures.publish(pstack.runtime(), [build_id])
    sync = tmp_path / "sync"
    sync.mkdir()

    doomed = spawn("tests.reliability.fault_worker", ["die-before-ack", str(sync), "doomed"], env)
    _, err = doomed.communicate(timeout=30)
    assert doomed.returncode == -signal.SIGKILL, err
    job = job_row(pstack.engine, build_id)
    assert (job.status, job.attempts) == ("done", 1)  # finished; its ack never sent
    assert status_of(pstack.engine, build_id) == "succeeded"
    settled = stage_events_of(pstack.engine, build_id)

    rescuer = spawn("tests.reliability.fault_worker", ["toy", str(sync), "rescuer"], env)
    seen: list[str] = []
    assert rescuer.stderr is not None
    lines = rescuer.stderr
    reader = threading.Thread(target=lambda: seen.extend(lines), daemon=True)
    reader.start()

    def acked() -> bool:
        return any("acked without work" in line for line in seen)

    try:
        # Pub/Sub redelivers at the ack deadline the worker last set (10 s at least).
        wait_until(acked, 30, "the redelivery acked")
    finally:
        assert stop(rescuer) == 0
    (line,) = [line for line in seen if "acked without work" in line]
    assert f"build {build_id}:" in line and "done job" in line
    assert runs(sync, "rescuer") == []
    assert stage_events_of(pstack.engine, build_id) == settled
    job = job_row(pstack.engine, build_id)
    assert (job.status, job.attempts) == ("done", 1)


def test_ref_locks_left_by_a_killed_fetch_do_not_block_the_next_build(
    origin, make_settings, sqlite_url, sqlite_engine
):
    settings = make_settings(
        sqlite_url, clone_url=origin.url, env={"TRAINHOOK_POLL_INTERVAL": "0.05"}
    )
    runtime = build_runtime(settings, sqlite_engine)
    counter = Counter({"checkout": checkout_stage})
    first = new_build(sqlite_engine, origin.commit({"app.py": "# one\n"}))
    Worker(runtime, pipeline=counter.pipeline()).run(threading.Event(), burst=True)
    assert status_of(sqlite_engine, first) == "succeeded"
    # A fetch killed between taking its ref locks and renaming them into place leaves the
    # lock files behind (git never removes another process's locks).
    mirror = settings.mirrors_dir / f"{settings.repos[0].slug}.git"
    for lock in ("refs/heads/main.lock", "packed-refs.lock", "shallow.lock"):
        (mirror / lock).write_text("0" * 40 + "\n")

    second = new_build(sqlite_engine, origin.commit({"app.py": "# two\n"}))
    Worker(runtime, pipeline=counter.pipeline(), backoff=lambda _: 0.0).run(
        threading.Event(), burst=True
    )

    view = build_view(sqlite_engine, second)
    assert view["status"] == "succeeded", view["error"]
    assert job_row(sqlite_engine, second).attempts == 1  # no failed attempt on the way
    assert list(mirror.rglob("*.lock")) == []

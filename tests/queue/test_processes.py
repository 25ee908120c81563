"""Workers as real processes over Pub/Sub: one killed with SIGKILL mid-train (the job comes
back and finishes once), one stopped with SIGTERM (the job is nacked and taken over at once)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT
from tests.queue.conftest import Stack, build_status, job, new_build, process_env, publish
from tests.support.pubsub import PubSubEmulator


def spawn(env: dict[str, str], sync: Path, name: str, train: float) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.queue.worker_process", str(sync), name, str(train)],
        cwd=REPO_ROOT,
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for(check, procs: list[subprocess.Popen[str]], timeout: float, what: str) -> float:
    started = time.monotonic()
    while not check():
        for proc in procs:
            if proc.poll() is not None:
                pytest.fail(f"a worker exited early ({proc.returncode}): {proc.stderr.read()}")
        assert time.monotonic() - started < timeout, f"{what}: not within {timeout}s"
        time.sleep(0.05)
    return time.monotonic() - started


def runs(sync: Path, name: str) -> list[str]:
    path = sync / f"runs-{name}"
    return path.read_text().split("\n")[:-1] if path.exists() else []


def stop(proc: subprocess.Popen[str]) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()


@pytest.fixture
def setting(pstack: Stack, pubsub_emulator: PubSubEmulator, tmp_path: Path):
    env = {**process_env(pstack, tmp_path), "PUBSUB_EMULATOR_HOST": pubsub_emulator.host}
    env["TRAINHOOK_LEASE_SECONDS"] = "3"
    sync = tmp_path / "sync"
    sync.mkdir()
    return env, sync


def test_worker_killed_mid_train_the_job_comes_back_and_finishes_once(pstack: Stack, setting):
    env, sync = setting
    build_id = new_build(pstack.engine)
    publish(pstack.runtime(), [build_id])
    doomed = spawn(env, sync, "doomed", train=60)
    wait_for((sync / "train-doomed").exists, [doomed], 30, "doomed worker in train")

    doomed.send_signal(signal.SIGKILL)
    doomed.wait()
    rescuer = spawn(env, sync, "rescuer", train=0.2)
    try:
        waited = wait_for(
            lambda: build_status(pstack.engine, build_id).status == "succeeded",
            [rescuer],
            40,
            "the build finished by the rescuer",
        )
    finally:
        assert stop(rescuer) == 0
    assert waited < 30  # redelivered at the ack deadline, not after hours
    row = job(pstack.engine, build_id)
    assert (row.status, row.attempts) == ("done", 2)
    assert runs(sync, "doomed")[-1] == f"{build_id} train"
    # Resumed from the first unfinished stage: checkout again (files), then train onwards.
    assert [line.split()[1] for line in runs(sync, "rescuer")] == [
        "checkout", "train", "build", "push", "deploy", "vertex",
    ]  # fmt: skip


def test_sigterm_nacks_the_job_and_another_worker_takes_it_at_once(pstack: Stack, setting):
    env, sync = setting
    build_id = new_build(pstack.engine)
    publish(pstack.runtime(), [build_id])
    leaving = spawn(env, sync, "leaving", train=2)
    wait_for((sync / "train-leaving").exists, [leaving], 30, "leaving worker in train")
    staying = spawn(env, sync, "staying", train=0.2)
    wait_for((sync / "ready-staying").exists, [staying], 30, "second worker up")

    leaving.send_signal(signal.SIGTERM)  # finishes `train`, then releases the job
    assert leaving.wait(timeout=30) == 0
    try:
        taken = wait_for(
            lambda: build_status(pstack.engine, build_id).status == "succeeded",
            [staying],
            30,
            "the build finished by the other worker",
        )
    finally:
        assert stop(staying) == 0
    assert taken < 6, f"took {taken:.1f}s: the release did not nack (ack deadline is 10 s)"
    assert job(pstack.engine, build_id).attempts == 1  # a graceful stop is no attempt
    assert [line.split()[1] for line in runs(sync, "leaving")][-1] == "train"
    assert "vertex" in [line.split()[1] for line in runs(sync, "staying")]

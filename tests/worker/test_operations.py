"""A real build run by real `trainhook` processes, read the way an operator's tools read it:
every stderr line of the worker is one JSON object Cloud Logging understands, and both the
worker and the service serve Prometheus metrics about it."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO_ROOT
from tests.support.gitrepo import GitRepo

pytestmark = pytest.mark.slow

SECRET = "hook-secret-value-9f8e7d"
TOKEN = "api-token-value-0123456789abcdef"
REPO = "octo-org/app"


@dataclass
class Run:
    env: dict[str, str]
    stderr: list[str]  # the worker's, after it stopped
    worker_metrics: str
    healthz: tuple[int, dict[str, Any]]
    readyz: tuple[int, dict[str, Any]]
    port: int
    home: Path


def _cli(env: dict[str, str], *args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "trainhook.cli", *args],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
        **kwargs,
    )


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_for(predicate: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def metric(text: str, name: str, labels: str = "") -> float | None:
    """The value of one sample in Prometheus text, or None when absent."""
    wanted = f"{name}{{{labels}}}" if labels else name
    for line in text.splitlines():
        if line.startswith(wanted + " "):
            return float(line.rsplit(" ", 1)[1])
    return None


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    """One build of a small repository, run to its end by `trainhook worker` with
    TRAINHOOK_LOG_FORMAT=json and TRAINHOOK_WORKER_PORT=0 (a free port, logged)."""
    root = tmp_path_factory.mktemp("ops")
    origin = GitRepo(root / "origin")
    data = root / "train.csv"
    subprocess.run(
        [sys.executable, "-P", "-m", "trainer", "sample", "--out", str(data), "--rows", "300"],
        cwd=REPO_ROOT,
        check=True,
        capture_output=True,
    )
    origin.commit({"check.py": "print('checks passed')\n", "data/train.csv": data.read_text()})
    config = root / "trainhook.toml"
    config.write_text(
        f'[[repos]]\nname = "{REPO}"\nclone_url = "{origin.url}"\nsecret_env = "HOOK_SECRET"\n'
        'test_command = "python check.py"\ndata = ["data/train.csv"]\n'
    )
    env = {
        **os.environ,
        "TRAINHOOK_HOME": str(root / "home"),
        "TRAINHOOK_CONFIG": str(config),
        "TRAINHOOK_LOG_FORMAT": "json",
        "TRAINHOOK_WORKER_PORT": "0",
        "TRAINHOOK_POLL_INTERVAL": "0.1",
        "TRAINHOOK_API_TOKEN": TOKEN,
        "HOOK_SECRET": SECRET,
        # `local` would pick a container engine where one is installed, and the example has no
        # image to build here: these are tests of logs, metrics and the CLI, not of images.
        "TRAINHOOK_BUILDER": "bundle",
    }
    _cli(env, "migrate")
    _cli(env, "rebuild", REPO, "--ref", "main")
    log_path = root / "worker.log"
    with log_path.open("w") as log_file:
        worker = subprocess.Popen(
            [sys.executable, "-m", "trainhook.cli", "worker"],
            env=env,
            cwd=REPO_ROOT,
            stdout=subprocess.DEVNULL,
            stderr=log_file,
        )
        try:
            found = _wait_for(
                lambda: re.search(r"probes on port (\d+)", log_path.read_text()), 30, "the port"
            )
            base = f"http://127.0.0.1:{found.group(1)}"
            done = 'status="succeeded"'
            _wait_for(
                lambda: metric(_get(base + "/metrics")[1], "trainhook_builds_finished_total", done),
                180,
                "the build to succeed",
            )
            metrics_text = _get(base + "/metrics")[1]
            healthz, readyz = _get(base + "/healthz"), _get(base + "/readyz")
        finally:
            worker.send_signal(signal.SIGTERM)
            worker.wait(timeout=60)
    yield Run(
        env=env,
        stderr=log_path.read_text().splitlines(),
        worker_metrics=metrics_text,
        healthz=(healthz[0], json.loads(healthz[1])),
        readyz=(readyz[0], json.loads(readyz[1])),
        port=int(found.group(1)),
        home=root / "home",
    )


def test_every_worker_log_line_is_one_cloud_logging_json_object(run: Run):
    assert run.stderr
    entries = [json.loads(line) for line in run.stderr]
    for entry in entries:
        assert entry["severity"] in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
        assert isinstance(entry["message"], str) and entry["message"]
        assert re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+\+00:00$", entry["time"])
    # Every line about the build says which build, repository, job and attempt; stage lines
    # say which stage, in the fields and in the labels Cloud Logging indexes.
    about_build = [e for e in entries if "build 1" in e["message"]]
    assert len(about_build) >= 9
    for entry in about_build:
        assert (entry["build_id"], entry["repo"], entry["job"], entry["attempt"]) == (
            1,
            REPO,
            1,
            1,
        )
        labels = entry["logging.googleapis.com/labels"]
        assert labels["build_id"] == "1" and labels["repo"] == REPO
    stages = {e["stage"] for e in about_build if "stage" in e}
    assert {"checkout", "test", "hash", "train", "build", "push", "deploy"} <= stages
    assert all(f"build 1 {e['stage']} " in e["message"] for e in about_build if "stage" in e)
    # Lines outside a build carry no stale build labels.
    assert "build_id" not in entries[0] and "build_id" not in entries[-1]


def test_the_logs_hold_no_secret(run: Run):
    text = "\n".join(run.stderr)
    assert SECRET not in text and TOKEN not in text


def test_the_worker_serves_its_metrics_in_prometheus_names(run: Run):
    text = run.worker_metrics
    assert metric(text, "trainhook_builds_finished_total", 'status="succeeded"') == 1
    for stage in ("checkout", "test", "hash", "train", "deploy"):
        labels = f'stage="{stage}",status="succeeded"'
        assert metric(text, "trainhook_stage_duration_seconds_count", labels) == 1
    assert metric(text, "trainhook_cache_decisions_total", 'level="model",result="miss"') == 1
    assert metric(text, "trainhook_queue_jobs", 'status="done"') == 1
    assert metric(text, "trainhook_queue_jobs", 'status="queued"') == 0
    assert metric(text, "trainhook_queue_oldest_job_age_seconds") == 0
    # Conventions: counters end in _total, durations are in seconds.
    for line in text.splitlines():
        if line.startswith("# TYPE trainhook_"):
            _, _, name, kind = line.split()
            if kind == "counter":
                assert name.endswith("_total") or name + "_total" in text
            if kind == "histogram":
                assert name.endswith("_seconds")


def test_the_worker_probes_answer(run: Run):
    assert run.healthz == (200, {"status": "ok", "reason": "waiting for jobs"})
    assert run.readyz == (200, {"status": "ok", "reason": "ok"})


@dataclass
class Service:
    base: str
    stderr: list[str]  # filled when the module's tests are done


@pytest.fixture(scope="module")
def service(run: Run, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """`trainhook serve` on the database of the build above."""
    port = _free_port()
    log_path = tmp_path_factory.mktemp("service") / "service.log"
    with log_path.open("w") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "trainhook.cli", "serve", "--port", str(port)],
            env=run.env,
            cwd=REPO_ROOT,
            stdout=subprocess.DEVNULL,
            stderr=log_file,
        )
        running = Service(f"http://127.0.0.1:{port}", [])

        def answers() -> bool:
            try:
                return _get(running.base + "/healthz")[0] == 200
            except OSError:
                return False

        try:
            _wait_for(answers, 30, "the service")
            yield running
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=30)
    running.stderr[:] = log_path.read_text().splitlines()


def test_the_service_serves_the_queue_figures_of_the_same_build(service: Service):
    text = _get(service.base + "/metrics")[1]
    assert metric(text, "trainhook_builds", 'status="succeeded"') == 1
    assert metric(text, "trainhook_queue_jobs", 'status="done"') == 1
    assert metric(text, "trainhook_queue_oldest_job_age_seconds") == 0
    assert "trainhook_webhook_duration_seconds" in text


def _follow(run: Run, service: Service, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**run.env, "TRAINHOOK_URL": service.base}
    return subprocess.run(
        [sys.executable, "-m", "trainhook.cli", *args],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_builds_and_build_show_the_build_with_its_full_url(run: Run, service: Service):
    listed = _follow(run, service, "builds", "--repo", REPO)
    assert listed.returncode == 0, listed.stderr
    [line] = listed.stdout.splitlines()
    assert line.split()[:3] == ["1", "succeeded", REPO]
    assert line.endswith(f"{service.base}/builds/1")
    shown = _follow(run, service, "build", "1")
    stages = {ln.split()[0]: ln.split()[1] for ln in shown.stdout.splitlines()[1:]}
    assert stages["train"] == "succeeded" and stages["vertex"] == "skipped"


def test_logs_print_a_stage_or_every_stage_and_follow_to_the_end(run: Run, service: Service):
    one = _follow(run, service, "logs", "1", "test")
    assert one.returncode == 0, one.stderr
    assert "checks passed" in one.stdout and "==>" not in one.stdout
    every = _follow(run, service, "logs", "1", "--follow")
    assert every.returncode == 0, every.stderr
    assert "==> checkout <==" in every.stdout and "==> train <==" in every.stdout
    assert "cache-inputs {" in every.stdout


def test_watch_exits_0_for_a_success_1_for_a_cancelled_build_2_on_usage(run: Run, service: Service):
    succeeded = _follow(run, service, "watch", "1")
    assert succeeded.returncode == 0, succeeded.stderr
    assert succeeded.stdout.splitlines()[-1].startswith("build 1 succeeded in ")
    # Queued through the service (no worker runs now), cancelled, then watched.
    queued = _follow(run, service, "rebuild", REPO, "--ref", "main")
    assert queued.returncode == 0, queued.stderr
    assert queued.stdout.strip() == f"queued build 2: {service.base}/builds/2"
    cancelled = _follow(run, service, "cancel", "2")
    assert cancelled.returncode == 0 and "cancelled build 2" in cancelled.stdout
    finished = _follow(run, service, "cancel", "1")
    assert finished.returncode == 1 and "409 build 1 already succeeded" in finished.stderr
    watched = _follow(run, service, "watch", "2")
    assert watched.returncode == 1 and "build 2 cancelled" in watched.stdout
    assert _follow(run, service, "watch", "nine").returncode == 2
    missing = _follow(run, service, "watch", "999")
    assert missing.returncode == 1 and "404" in missing.stderr


def test_the_cli_says_where_it_looked_when_no_service_answers(run: Run):
    env = {**run.env, "TRAINHOOK_URL": f"http://127.0.0.1:{_free_port()}"}
    done = subprocess.run(
        [sys.executable, "-m", "trainhook.cli", "builds"],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1 and "cannot reach http://127.0.0.1:" in done.stderr


def test_migrate_prints_only_its_answer(run: Run):
    done = _cli({**run.env, "TRAINHOOK_LOG_FORMAT": "text"}, "migrate")
    assert done.stdout.startswith("database is at revision ") and done.stdout.count("\n") == 1
    assert done.stderr == ""

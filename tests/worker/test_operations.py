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


def test_the_service_serves_the_queue_figures_of_the_same_build(run: Run):
    port = _free_port()
    service = subprocess.Popen(
        [sys.executable, "-m", "trainhook.cli", "serve", "--port", str(port)],
        env=run.env,
        cwd=REPO_ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        url = f"http://127.0.0.1:{port}/metrics"

        def scrape() -> str | None:
            try:
                return _get(url)[1]
            except OSError:
                return None

        text = _wait_for(scrape, 30, "the service")
    finally:
        service.send_signal(signal.SIGTERM)
        _, err = service.communicate(timeout=30)
    assert metric(text, "trainhook_builds", 'status="succeeded"') == 1
    assert metric(text, "trainhook_queue_jobs", 'status="done"') == 1
    assert metric(text, "trainhook_queue_oldest_job_age_seconds") == 0
    assert "trainhook_webhook_duration_seconds" in text
    for line in err.splitlines():
        json.loads(line)


def test_migrate_prints_only_its_answer(run: Run):
    done = _cli({**run.env, "TRAINHOOK_LOG_FORMAT": "text"}, "migrate")
    assert done.stdout.startswith("database is at revision ") and done.stdout.count("\n") == 1
    assert done.stderr == ""

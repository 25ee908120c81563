"""Test-stage venv reuse (`test_env = "venv"`), on the bundled example repository
(examples/social-score-api: requirements-dev.txt with pytest, httpx, Starlette,
scikit-learn, NLTK; its own pytest suite as test_command):

1. first push: the test stage creates the venv for the deps key (uv venv + uv pip install),
   then runs the tests in it;
2. second push changing only README: the same key, the venv is reused;
3. for reference, the same tests in the worker's own Python (`test_env = "worker"`).

Each repetition starts with no venv. By default uv's own cache is warm (a first, untimed
install fills it, as on a worker that has built before); `--cold` also times the first push
with an empty uv cache, every wheel downloaded from the index.

    uv run python bench/cache/venv.py [--reps 3] [--cold]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from trainhook import db  # noqa: E402
from trainhook.builds import BuildSpec, create_build  # noqa: E402
from trainhook.cli.demo import create_example_repo  # noqa: E402
from trainhook.db import make_engine, reading  # noqa: E402
from trainhook.metrics import Metrics  # noqa: E402
from trainhook.settings import Settings, load_settings  # noqa: E402
from worker import testenv  # noqa: E402
from worker.checkout import checkout_stage  # noqa: E402
from worker.context import BuildContext, BuildInfo  # noqa: E402
from worker.recorder import Recorder  # noqa: E402
from worker.testcommand import repo_tests_stage  # noqa: E402

NAME = "bench/social-score-api"
STAGES = ("checkout", "test", "hash", "train", "build", "push", "deploy", "vertex")
TEST_COMMAND = "python -m pytest -q -p no:cacheprovider"


def git(cwd: Path, *args: str) -> str:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "bench",
        "GIT_AUTHOR_EMAIL": "bench@example.invalid",
        "GIT_COMMITTER_NAME": "bench",
        "GIT_COMMITTER_EMAIL": "bench@example.invalid",
        "GIT_CONFIG_NOSYSTEM": "1",
    }
    done = subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True)
    return done.stdout.decode().strip()


def settings_for(work: Path, repo: Path, test_env: str) -> Settings:
    config = work / f"trainhook-{test_env}.toml"
    config.write_text(
        "[[repos]]\n"
        f'name = "{NAME}"\n'
        f'clone_url = "{repo.as_uri()}"\n'
        'secret_env = "BENCH_WEBHOOK_SECRET"\n'
        f'test_command = "{TEST_COMMAND}"\n'
        f'test_env = "{test_env}"\n'
    )
    env = {
        "TRAINHOOK_HOME": str(work / "home"),
        "TRAINHOOK_CONFIG": str(config),
        "BENCH_WEBHOOK_SECRET": "bench",
        "PATH": os.environ.get("PATH", ""),
    }
    return load_settings(env)


def test_stage(settings: Settings, engine: Any, sha: str) -> tuple[float, str]:
    """Checkout (untimed), then the test stage: (seconds, detail)."""
    with engine.begin() as conn:
        build_id = create_build(
            conn, BuildSpec(provider="github", repo=NAME, ref="refs/heads/main", sha=sha)
        )
    with reading(engine) as conn:
        build = BuildInfo.load(conn, build_id)
    assert build is not None
    repo = settings.repo(NAME)
    assert repo is not None
    recorder = Recorder(engine, Metrics(), build_id, STAGES)
    ctx = BuildContext(settings=settings, repo=repo, build=build, recorder=recorder, engine=engine)
    try:
        checkout_stage(ctx)
        started = time.perf_counter()
        outcome = repo_tests_stage(ctx)
        seconds = time.perf_counter() - started
    finally:
        ctx.cleanup.close()
    return seconds, outcome.detail or ""


def install_seconds(detail: str) -> float:
    found = re.search(r"venv created for deps \w+ in ([\d.]+)s", detail)
    return float(found.group(1)) if found else 0.0


READY: list[float] = []  # seconds from the test stage's start until its venv was ready
_real_prepared_venv = testenv.prepared_venv


@contextlib.contextmanager
def timed_prepared_venv(ctx: BuildContext, secrets: set[str]) -> Iterator[Any]:
    """testenv.prepared_venv, timed up to the moment the tests could start."""
    started = time.perf_counter()
    with _real_prepared_venv(ctx, secrets) as venv:
        READY.append(time.perf_counter() - started)
        yield venv


testenv.prepared_venv = timed_prepared_venv  # the test stage looks it up when it runs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=3, help="timed repetitions")
    parser.add_argument("--cold", action="store_true", help="also time an empty uv cache")
    args = parser.parse_args()
    if testenv.find_uv() is None:
        print("uv is not installed: the venv would be made by pip (not what is measured here)")
        return 1
    work = Path(tempfile.mkdtemp(prefix="trainhook-bench-venv-"))
    try:
        repo = work / "social-score-api"
        create_example_repo(repo)
        venv_settings = settings_for(work, repo, "venv")
        worker_settings = settings_for(work, repo, "worker")
        db.upgrade(venv_settings.database_url)
        engine = make_engine(venv_settings.database_url)
        # Fill uv's cache once (untimed), as on a worker that has built before.
        test_stage(venv_settings, engine, git(repo, "rev-parse", "HEAD"))
        names = ("create", "install", "ready_new", "reuse", "ready_reused", "worker")
        rows: dict[str, list[float]] = {name: [] for name in names}
        for rep in range(args.reps):
            shutil.rmtree(venv_settings.venvs_dir, ignore_errors=True)
            first = git(repo, "rev-parse", "HEAD")
            seconds, detail = test_stage(venv_settings, engine, first)
            assert "venv created" in detail, detail
            rows["create"].append(seconds)
            rows["install"].append(install_seconds(detail))
            rows["ready_new"].append(READY[-1])
            (repo / "README.md").write_text(f"rep {rep}\n")
            git(repo, "commit", "-qam", f"README only ({rep})")
            seconds, detail = test_stage(venv_settings, engine, git(repo, "rev-parse", "HEAD"))
            assert "venv reused" in detail, detail
            rows["reuse"].append(seconds)
            rows["ready_reused"].append(READY[-1])
            rows["worker"].append(test_stage(worker_settings, engine, first)[0])
        cold, cold_ready = None, 0.0
        if args.cold:
            shutil.rmtree(venv_settings.venvs_dir, ignore_errors=True)
            os.environ["UV_CACHE_DIR"] = str(work / "empty-uv-cache")
            cold = test_stage(venv_settings, engine, git(repo, "rev-parse", "HEAD"))
            cold_ready = READY[-1]
            del os.environ["UV_CACHE_DIR"]
        engine.dispose()
    finally:
        shutil.rmtree(work, ignore_errors=True)

    med = {name: statistics.median(values) for name, values in rows.items()}
    print(f"test stage of the example repository, median of {args.reps} (seconds)")
    print("| figure | venv ready | whole test stage |")
    print("|---|---:|---:|")
    print(
        f"| first push: venv created (uv cache warm) | {med['ready_new']:.3f} "
        f"(install {med['install']:.2f}) | {med['create']:.2f} |"
    )
    print(
        f"| second push, README only: venv reused | {med['ready_reused']:.3f} "
        f"| {med['reuse']:.2f} |"
    )
    print(f"| test_env = worker (today's behaviour) | - | {med['worker']:.2f} |")
    if cold is not None:
        print(
            f"| first push, empty uv cache (downloads) | {cold_ready:.3f} "
            f"(install {install_seconds(cold[1]):.2f}) | {cold[0]:.2f} |"
        )
    ratio = med["ready_new"] / med["ready_reused"]
    print(f"\nvenv ready, created / reused: {ratio:.0f}x (warm uv cache)")
    if cold is not None:
        print(f"venv ready, created / reused: {cold_ready / med['ready_reused']:.0f}x (cold)")
    print(f"whole test stage, first / second push: {med['create'] / med['reuse']:.2f}x")
    print("runs:", {name: [round(v, 2) for v in values] for name, values in rows.items()})
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    print(
        f"{datetime.now(UTC).date()} Python {sys.version.split()[0]}, {os.cpu_count()} CPUs, "
        f"load average {load} (the test runs themselves vary with it)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Fixtures for the trainer tests: generated sample data, small CSV writers, shared data."""

from __future__ import annotations

import csv
import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.required import unavailable
from trainer.sample import generate_sample

REPO_ROOT = Path(__file__).resolve().parents[2]
SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
AIRLINE = SHARED_DATA / "twitter_us_airline_sentiment.csv"


def airline_csv() -> Path:
    """The shared airline tweets file, or skip the test when it is not beside the repo."""
    if not AIRLINE.is_file():
        unavailable("SHARED", "../shared/data/twitter_us_airline_sentiment.csv is not present")
    return AIRLINE


@pytest.fixture(scope="session")
def sample_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """600 generated rows (seed 0), shared by the tests that only read it."""
    return generate_sample(tmp_path_factory.mktemp("sample") / "sample.csv", rows=600, seed=0)


WriteCsv = Callable[..., Path]


@pytest.fixture
def write_csv(tmp_path: Path) -> WriteCsv:
    """Write rows (header first) as a CSV file and return its path."""

    def write(rows: list[list[str]], name: str = "data.csv", newline: str = "\r\n") -> Path:
        path = tmp_path / name
        with path.open("w", encoding="utf-8", newline="") as handle:
            csv.writer(handle, lineterminator=newline).writerows(rows)
        return path

    return write


@pytest.fixture(scope="session")
def child_env() -> Iterator[dict[str, str]]:
    """Environment for `python -m trainer` children: bytecode kept in a cache outside the tree
    (where PYTHONDONTWRITEBYTECODE is set, every child would recompile scikit-learn)."""
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(Path(tempfile.gettempdir()) / f"trainer-pycache-{os.getuid()}")
    env["PYTHONPATH"] = str(REPO_ROOT)
    yield env


def run_python(args: list[str], env: dict[str, str], cwd: Path) -> tuple[int, str, str]:
    """Run `python ARGS` and return (exit status, stdout, stderr)."""
    import subprocess

    proc = subprocess.run(
        [sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )
    return proc.returncode, proc.stdout, proc.stderr

"""The train stage, run by the worker with the real trainer, records what its quality gate
compared (`train_results`, which the pull request comment shows): the candidate's figures
from the model it trained or restored, the deployed model's as the gate read them, and the
verdict, refusals included."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa

from tests.conftest import REPO_ROOT
from tests.support.gitrepo import GitRepo
from tests.worker.conftest import build_view, stage_map, toy_pipeline
from tests.worker.test_pull_request_builds import head_only_on, pull_build
from trainhook.artifacts import open_store
from trainhook.runtime import build_runtime
from trainhook.settings import Settings
from trainhook.trainresults import TrainResult, figures, train_result
from worker.checkout import checkout_stage
from worker.hash.keys import make_hash_stage
from worker.loop import Worker
from worker.pipeline import default_pipeline
from worker.training import make_train_stage

pytestmark = pytest.mark.slow

DATA = 'data = ["data/train.csv"]'
DEPLOYED = {
    "macro_f1": 0.55,
    "per_class": {"negative": {"f1": 0.5}, "positive": {"f1": 0.6}},
    "rows": {"read": 100, "used": 98, "train": 78, "validation": 20},
    "confusion_matrix": {"labels": ["negative", "positive"], "matrix": [[1, 0], [0, 1]]},
}


@pytest.fixture(scope="module")
def sample_csv(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("sample") / "train.csv"
    subprocess.run(
        [sys.executable, "-P", "-m", "trainer", "sample", "--out", str(path), "--rows", "240"],
        cwd=REPO_ROOT,
        check=True,
        capture_output=True,
    )
    return path.read_text()


def work(settings: Settings, engine: sa.Engine, pipeline: Any) -> None:
    Worker(build_runtime(settings, engine), pipeline=pipeline).run(threading.Event(), burst=True)


def recorded(engine: sa.Engine, build_id: int) -> TrainResult:
    with engine.connect() as conn:
        result = train_result(conn, build_id)
    assert result is not None, f"build #{build_id} recorded no train result"
    return result


def real_stages(settings: Settings, deployed: Callable[[Any], Any]) -> Any:
    """checkout, hash and train as the worker runs them; the gate reads `deployed`."""
    return toy_pipeline(
        {
            "checkout": checkout_stage,
            "hash": make_hash_stage(open_store(settings.artifacts)),
            "train": make_train_stage(deployed),
        }
    )


def test_a_request_build_records_the_figures_of_the_model_it_trained(
    origin: GitRepo, make_settings, sqlite_url: str, sqlite_engine: sa.Engine, sample_csv: str
):
    settings = make_settings(sqlite_url, clone_url=origin.url, extra=DATA)
    origin.commit({"app.py": "x = 1\n"})
    sha = head_only_on(origin, "refs/pull/7/head", {"data/train.csv": sample_csv})
    build_id = pull_build(sqlite_engine, "refs/pull/7/head", sha)

    work(settings, sqlite_engine, default_pipeline(settings))

    assert build_view(sqlite_engine, build_id)["status"] == "succeeded"
    train = stage_map(sqlite_engine, build_id)["train"]
    result = recorded(sqlite_engine, build_id)
    candidate = result.candidate
    assert candidate["rows"]["read"] == 240
    assert candidate["labels"] == sorted(candidate["f1"]) and len(candidate["labels"]) >= 2
    assert f"macro F1 {candidate['macro_f1']:.3f}" in train["detail"]
    # Nothing deployed: the gate judged the model alone, and said so in the stage too.
    assert result.deployed is None and result.passed
    assert f"gate: {result.reason}" in train["detail"]

    # The same data again: the model is restored from the cache, and recorded the same.
    again = pull_build(sqlite_engine, "refs/pull/7/head", sha)
    work(settings, sqlite_engine, default_pipeline(settings))
    assert stage_map(sqlite_engine, again)["train"]["cache"] == "hit"
    assert recorded(sqlite_engine, again).candidate == candidate


def test_the_deployed_models_figures_and_a_refusal_are_recorded_as_the_gate_saw_them(
    origin: GitRepo, make_settings, sqlite_url: str, sqlite_engine: sa.Engine, sample_csv: str
):
    strict = make_settings(sqlite_url, clone_url=origin.url, extra=DATA + "\nmin_macro_f1 = 0.999")
    origin.commit({"app.py": "x = 1\n"})
    sha = head_only_on(origin, "refs/pull/8/head", {"data/train.csv": sample_csv})
    build_id = pull_build(sqlite_engine, "refs/pull/8/head", sha)

    work(strict, sqlite_engine, real_stages(strict, lambda ctx: DEPLOYED))

    assert build_view(sqlite_engine, build_id)["status"] == "failed"
    train = stage_map(sqlite_engine, build_id)["train"]
    result = recorded(sqlite_engine, build_id)
    assert result.deployed == figures(DEPLOYED)
    assert not result.passed and "below the minimum" in result.reason
    assert f"quality gate refused: {result.reason}" in train["detail"]

"""The real pipeline end to end: git, the repository's tests, the trainer, the local builder.

SQLite only: what is tested here is files and processes; the SQL side is covered per
database in test_loop.py.
"""

from __future__ import annotations

import csv
import os
import random
import subprocess
import sys
import threading

import pytest

from tests.conftest import REPO_ROOT
from tests.worker.conftest import build_view, logs, new_build, stage_map
from trainhook.runtime import build_runtime
from worker.checkout import checkout_stage
from worker.context import BuildContext
from worker.hash.keys import hash_stage
from worker.loop import Worker
from worker.pipeline import Pipeline, default_pipeline
from worker.stage import Outcome, SingleStage
from worker.testcommand import repo_tests_stage
from worker.training import make_train_stage

pytestmark = pytest.mark.slow

CHECK = "print('checks passed')\n"
CONFIG = 'test_command = "python check.py"\ndata = ["data/train.csv"]'


@pytest.fixture(scope="module")
def sample_csv(tmp_path_factory: pytest.TempPathFactory) -> str:
    """300 rows from the trainer's own sample generator (once per module)."""
    path = tmp_path_factory.mktemp("sample") / "train.csv"
    command = ["sample", "--out", str(path), "--rows", "300", "--seed", "7"]
    subprocess.run(
        [sys.executable, "-P", "-m", "trainer", *command],
        cwd=REPO_ROOT,
        check=True,
        capture_output=True,
    )
    return path.read_text()


@pytest.fixture
def setup(make_settings, sqlite_url, sqlite_engine, origin):
    """(settings, run) where run(sha, force=False, pipeline=None) runs one build to its end."""

    def make(extra: str = CONFIG):
        settings = make_settings(sqlite_url, clone_url=origin.url, extra=extra)
        runtime = build_runtime(settings, sqlite_engine)

        def run(sha: str, *, force: bool = False, pipeline: Pipeline | None = None) -> int:
            build_id = new_build(sqlite_engine, sha, force=force)
            worker = Worker(runtime, pipeline=pipeline or default_pipeline(settings))
            worker.run(threading.Event(), burst=True)
            return build_id

        return settings, run

    return make


def no_builder_pipeline() -> Pipeline:
    """The real stages up to train; builder stages that do nothing (no health check)."""

    def ok(ctx: BuildContext) -> Outcome:
        return Outcome(detail="not built in this test")

    return Pipeline(
        [
            SingleStage("checkout", checkout_stage),
            SingleStage("test", repo_tests_stage),
            SingleStage("hash", hash_stage),
            SingleStage("train", make_train_stage(lambda ctx: None)),
            *(SingleStage(name, ok) for name in ("build", "push", "deploy", "vertex")),
        ]
    )


def test_second_push_with_same_data_reuses_the_model(setup, origin, sample_csv, sqlite_engine):
    settings, run = setup()
    first_sha = origin.commit({"data/train.csv": sample_csv, "check.py": CHECK})
    first = run(first_sha)

    view = build_view(sqlite_engine, first)
    assert view["status"] == "succeeded", view["error"]
    stages = stage_map(sqlite_engine, first)
    assert [stages[s]["status"] for s in ("checkout", "test", "hash", "train")] == ["succeeded"] * 4
    assert stages["train"]["cache"] == "miss"
    assert [stages[s]["status"] for s in ("build", "push", "deploy", "vertex")] == [
        "succeeded",
        "succeeded",
        "succeeded",
        "skipped",
    ]
    key = view["cache_key"]
    entry = settings.artifacts_path / "models" / key
    assert {"model.joblib", "vectorizer.joblib", "metrics.json", "manifest.json"} <= {
        p.name for p in entry.iterdir()
    }
    current = settings.home / "releases" / settings.repos[0].slug / "current"
    assert os.readlink(current) == f"b{first}-{first_sha[:12]}"
    assert "train" in logs(sqlite_engine, first)
    assert "GENERATED SAMPLE" not in stages["train"]["detail"]

    second_sha = origin.commit({"README.md": "# only docs changed\n"})
    second = run(second_sha)

    assert build_view(sqlite_engine, second)["status"] == "succeeded"
    train = stage_map(sqlite_engine, second)["train"]
    assert (train["status"], train["cache"]) == ("succeeded", "hit")
    assert f"model cache hit: key {key[:12]} produced by build #{first}" in train["detail"]
    assert "train" not in logs(sqlite_engine, second)  # the trainer never ran
    assert os.readlink(current) == f"b{second}-{second_sha[:12]}"


def test_forced_rebuild_and_changed_data_retrain(setup, origin, sample_csv, sqlite_engine):
    _, run = setup()
    pipeline = no_builder_pipeline()
    sha = origin.commit({"data/train.csv": sample_csv, "check.py": CHECK})
    first = run(sha, pipeline=pipeline)
    forced = run(sha, force=True, pipeline=pipeline)
    lines = sample_csv.splitlines()
    changed = run(
        origin.commit({"data/train.csv": "\n".join(lines[:-20]) + "\n"}), pipeline=pipeline
    )

    trains = [stage_map(sqlite_engine, b)["train"] for b in (first, forced, changed)]
    assert [t["cache"] for t in trains] == ["miss", "miss", "miss"]
    assert "forced rebuild" in trains[1]["detail"]
    keys = [build_view(sqlite_engine, b)["cache_key"] for b in (first, forced, changed)]
    assert keys[0] == keys[1] != keys[2]


def test_bad_data_fails_train_with_the_trainer_message(setup, origin, sqlite_engine):
    settings, run = setup()
    sha = origin.commit({"data/train.csv": "tweet,score\nhello,1\n", "check.py": CHECK})

    build_id = run(sha, pipeline=no_builder_pipeline())

    view = build_view(sqlite_engine, build_id)
    assert view["status"] == "failed"
    train = stage_map(sqlite_engine, build_id)["train"]
    assert train["status"] == "failed"
    assert "training data error" in train["detail"] and "train.csv" in train["detail"]
    assert {stage_map(sqlite_engine, build_id)[s]["status"] for s in ("build", "deploy")} == {
        "skipped"
    }
    assert not (settings.artifacts_path / "models" / view["cache_key"]).exists()


def test_quality_gate_refusal_fails_the_build_before_it_is_built(setup, origin, sqlite_engine):
    rng = random.Random(3)
    rows = [["text", "label"]] + [
        [" ".join(rng.choice(["good", "bad", "fine", "meh", "wow"]) for _ in range(4)),
         rng.choice(["pos", "neg", "neu"])]
        for _ in range(300)
    ]  # fmt: skip
    with (origin.path / "noise.csv").open("w", newline="") as stream:
        csv.writer(stream).writerows(rows)
    os.makedirs(origin.path / "data")
    os.replace(origin.path / "noise.csv", origin.path / "data" / "train.csv")
    sha = origin.commit({"check.py": CHECK})
    _, run = setup(CONFIG + "\nmin_macro_f1 = 0.95")

    build_id = run(sha, pipeline=no_builder_pipeline())

    view = build_view(sqlite_engine, build_id)
    assert view["status"] == "failed"
    train = stage_map(sqlite_engine, build_id)["train"]
    assert train["status"] == "failed" and "quality gate refused" in train["detail"]
    assert view["error"].startswith("train failed: ")
    for name in ("build", "push", "deploy", "vertex"):
        assert stage_map(sqlite_engine, build_id)[name]["detail"] == "earlier stage failed"


def test_repository_without_data_trains_on_the_generated_sample(setup, origin, sqlite_engine):
    _, run = setup('data = ["data/train.csv"]')
    build_id = run(origin.commit({"app.py": "x = 1\n"}), pipeline=no_builder_pipeline())

    view = build_view(sqlite_engine, build_id)
    assert view["status"] == "succeeded", view["error"]
    stages = stage_map(sqlite_engine, build_id)
    assert "GENERATED SAMPLE" in stages["hash"]["detail"]
    assert stages["train"]["cache"] == "miss"
    assert "TRAINED ON THE GENERATED SAMPLE" in stages["train"]["detail"]


def test_training_that_runs_too_long_is_killed_and_fails_the_build(
    origin, sample_csv, sqlite_engine, make_settings, sqlite_url
):
    settings = make_settings(
        sqlite_url, clone_url=origin.url, extra=CONFIG, env={"TRAINHOOK_TRAIN_TIMEOUT": "0.2"}
    )
    runtime = build_runtime(settings, sqlite_engine)
    sha = origin.commit({"data/train.csv": sample_csv, "check.py": CHECK})
    build_id = new_build(sqlite_engine, sha)

    Worker(runtime, pipeline=no_builder_pipeline()).run(threading.Event(), burst=True)

    train = stage_map(sqlite_engine, build_id)["train"]
    assert train["status"] == "failed"
    assert train["detail"].startswith("training timed out after 0.2s (killed)")
    models = settings.artifacts_path / "models"
    assert not models.exists() or list(models.iterdir()) == []  # no half-written entry

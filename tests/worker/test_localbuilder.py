"""The local builder: bundle, push to the registry dir, deploy behind a health check."""

from __future__ import annotations

import json
import os
from pathlib import Path

import joblib
import pytest
from sklearn.feature_extraction.text import CountVectorizer
from sklearn.linear_model import LogisticRegression

from tests.worker.conftest import context_for, new_build
from worker.builder import VERTEX_REASON
from worker.context import BuildContext
from worker.local.builder import LocalBuilder
from worker.stage import StageFailed


def small_model(folder: Path, macro_f1: float = 0.8) -> Path:
    folder.mkdir(parents=True)
    texts = ["love it", "great stuff", "hate it", "awful thing"]
    vectorizer = CountVectorizer().fit(texts)
    model = LogisticRegression().fit(vectorizer.transform(texts), ["pos", "pos", "neg", "neg"])
    joblib.dump(model, folder / "model.joblib")
    joblib.dump(vectorizer, folder / "vectorizer.joblib")
    (folder / "metrics.json").write_text(json.dumps({"macro_f1": macro_f1}))
    return folder


@pytest.fixture
def settings(make_settings, sqlite_url):
    return make_settings(sqlite_url)


def ready_context(settings, engine, tmp_path: Path, sha: str, model: Path) -> BuildContext:
    ctx = context_for(settings, engine, new_build(engine, sha))
    ctx.source = tmp_path / f"src-{sha[:4]}"
    ctx.source.mkdir()
    (ctx.source / "app.py").write_text("# the served app\n")
    ctx.model_dir = model
    return ctx


def statuses(ctx: BuildContext) -> dict[str, str]:
    return dict(ctx.recorder.done)


def test_builder_bundles_pushes_and_deploys_a_healthy_model(settings, sqlite_engine, tmp_path):
    ctx = ready_context(settings, sqlite_engine, tmp_path, "1" * 40, small_model(tmp_path / "m"))
    version = f"b{ctx.build.id}-{'1' * 12}"

    LocalBuilder()(ctx)

    assert statuses(ctx) == {
        "build": "succeeded",
        "push": "succeeded",
        "deploy": "succeeded",
        "vertex": "skipped",
    }
    slug = ctx.repo.slug
    bundle = settings.artifacts_path / "bundles" / slug / f"{version}.tar.gz"
    assert ctx.bundle is not None and ctx.bundle.path == bundle and bundle.is_file()
    manifest = json.loads((settings.home / "registry" / slug / f"{version}.json").read_text())
    assert manifest["digest"] == ctx.bundle.digest
    assert (manifest["sha"], manifest["build_id"]) == ("1" * 40, ctx.build.id)
    current = settings.home / "releases" / slug / "current"
    assert os.readlink(current) == version
    assert (current / "app.py").is_file() and (current / "trainhook_runtime" / "text.py").is_file()
    assert LocalBuilder().deployed_metrics(ctx) == {"macro_f1": 0.8}
    with sqlite_engine.connect() as conn:
        vertex = conn.exec_driver_sql(
            "SELECT detail FROM stage_events WHERE stage = 'vertex' AND status = 'skipped'"
        ).scalar_one()
    assert vertex == VERTEX_REASON == "Vertex AI pipelines need TRAINHOOK_BUILDER=cloudbuild"


def test_running_the_builder_again_gives_the_same_release(settings, sqlite_engine, tmp_path):
    ctx = ready_context(settings, sqlite_engine, tmp_path, "2" * 40, small_model(tmp_path / "m"))
    LocalBuilder()(ctx)
    first = ctx.bundle

    LocalBuilder()(ctx)

    assert ctx.bundle == first
    with sqlite_engine.connect() as conn:
        details = conn.exec_driver_sql(
            "SELECT detail FROM stage_events WHERE stage = 'push' AND status = 'succeeded'"
        ).scalars()
        assert [d.endswith("already in registry") for d in details] == [False, True]


def test_failed_health_check_keeps_previous_release(settings, sqlite_engine, tmp_path):
    good = ready_context(settings, sqlite_engine, tmp_path, "3" * 40, small_model(tmp_path / "g"))
    LocalBuilder()(good)
    broken_model = small_model(tmp_path / "b", macro_f1=0.9)
    (broken_model / "vectorizer.joblib").write_bytes(b"not a pickle")
    bad = ready_context(settings, sqlite_engine, tmp_path, "4" * 40, broken_model)

    with pytest.raises(StageFailed, match="health check of b2-444444444444 exited with 1"):
        LocalBuilder()(bad)

    assert statuses(bad) == {"build": "succeeded", "push": "succeeded", "deploy": "failed"}
    current = settings.home / "releases" / good.repo.slug / "current"
    assert os.readlink(current) == f"b{good.build.id}-{'3' * 12}"
    assert LocalBuilder().deployed_metrics(bad) == {"macro_f1": 0.8}


def test_nothing_is_deployed_before_the_first_release(settings, sqlite_engine, tmp_path):
    ctx = context_for(settings, sqlite_engine, new_build(sqlite_engine))
    assert LocalBuilder().deployed_metrics(ctx) is None

"""The hash stage: which data file is used, and the deps, nltk and model keys."""

from __future__ import annotations

import os

import pytest
import sqlalchemy as sa

import trainer
from tests.support.gitrepo import git
from tests.worker.conftest import context_for, new_build
from trainhook.models import builds
from worker.checkout import checkout_stage
from worker.context import BuildContext
from worker.hash.keys import hash_stage

DATA = "text,label\nlove it,pos\nhate it,neg\n"


@pytest.fixture
def hashed(make_settings, sqlite_url, sqlite_engine, origin):
    """Check out and hash a commit of `origin`; returns the context after the hash stage."""

    def run(sha: str, extra: str = "") -> tuple[BuildContext, str]:
        settings = make_settings(sqlite_url, clone_url=origin.url, extra=extra)
        ctx = context_for(settings, sqlite_engine, new_build(sqlite_engine, sha))
        checkout_stage(ctx)
        detail = hash_stage(ctx).detail or ""
        ctx.cleanup.close()
        return ctx, detail

    return run


def test_hash_uses_the_git_blob_id_of_the_first_configured_file_that_exists(
    hashed, origin, sqlite_engine
):
    sha = origin.commit({"data/prod.csv": DATA, "data/train.csv": "text,label\nx,y\n"})

    ctx, detail = hashed(sha)

    assert ctx.data is not None and ctx.keys is not None
    assert ctx.data.path == "data/prod.csv"  # cleaned_training_sample.csv is absent
    assert ctx.data.content_id == "git:" + git(origin.path, "rev-parse", f"{sha}:data/prod.csv")
    assert detail.startswith("data data/prod.csv git:")
    assert " · deps: miss" in detail and "model: miss" in detail
    with sqlite_engine.connect() as conn:
        stored = conn.execute(
            sa.select(builds.c.cache_key).where(builds.c.id == ctx.build.id)
        ).scalar_one()
    assert stored == ctx.keys.model


def test_same_data_in_another_commit_gives_the_same_model_key(hashed, origin):
    first, _ = hashed(origin.commit({"data/train.csv": DATA, "app.py": "v = 1\n"}))
    second, _ = hashed(origin.commit({"app.py": "v = 2\n"}))
    changed_deps, _ = hashed(origin.commit({"uv.lock": "version = 1\n"}))
    changed_data, _ = hashed(origin.commit({"data/train.csv": DATA + "meh,neg\n"}))

    assert first.keys and second.keys and changed_deps.keys and changed_data.keys
    assert second.keys == first.keys
    assert changed_deps.keys.model == first.keys.model
    assert changed_deps.keys.deps != first.keys.deps
    assert changed_data.keys.model != first.keys.model
    assert changed_data.keys.nltk == first.keys.nltk


def test_training_columns_are_part_of_the_model_key(hashed, origin):
    sha = origin.commit({"data/train.csv": DATA})
    plain, _ = hashed(sha)
    other, _ = hashed(sha, extra='text_column = "body"')
    assert plain.keys and other.keys and plain.keys.model != other.keys.model


def test_data_reached_through_an_inside_symlink_is_keyed_by_the_real_file(hashed, origin):
    (origin.path / "data").mkdir()
    os.symlink("../datasets/v3.csv", origin.path / "data" / "train.csv")
    sha = origin.commit({"datasets/v3.csv": DATA})

    ctx, detail = hashed(sha)

    assert ctx.data and ctx.data.path == "datasets/v3.csv"
    assert "(via data/train.csv)" in detail
    # (Symlinks leaving the tree, dangling or looping: tests/cache/test_hash_decisions.py.)


def test_missing_data_falls_back_loudly_to_the_generated_sample(hashed, origin):
    ctx, detail = hashed(origin.commit({"app.py": "x = 1\n"}))

    assert ctx.data and ctx.data.path is None
    # The sample is the trainer's: a new trainer version is new data.
    assert ctx.data.content_id == f"trainer-{trainer.TRAINER_VERSION}"
    assert detail.startswith(
        "NO DATA FILE FOUND (looked for data/cleaned_training_sample.csv, data/prod.csv, "
        "data/train.csv): TRAINING ON THE TRAINER'S GENERATED SAMPLE, NOT ON YOUR DATA · "
    )

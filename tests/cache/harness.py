"""Builds of a test repository run stage by stage (checkout, hash, train) on SQLite."""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from tests.worker.conftest import context_for, new_build
from trainhook.artifacts import ArtifactStore, open_store
from trainhook.settings import Settings
from worker.checkout import checkout_stage
from worker.context import BuildContext
from worker.hash.keys import make_hash_stage
from worker.stage import Outcome
from worker.training import make_train_stage

DATA = "text,label\nlove it,pos\nhate it,neg\n"
STOPWORDS = ["i", "me", "the", "a", "an", "not", "no"]


class Builds:
    def __init__(
        self,
        settings: Settings,
        engine: sa.Engine,
        store: ArtifactStore | None = None,
        gcs: Any = None,
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.store = store if store is not None else open_store(settings.artifacts)
        self.hash_stage = make_hash_stage(self.store, gcs)
        self.train_stage = make_train_stage(lambda ctx: None)

    def context(self, sha: str, force: bool = False) -> BuildContext:
        repo = self.settings.repos[0].name
        build = new_build(self.engine, sha, force=force, repo=repo)
        return context_for(self.settings, self.engine, build)

    def hash(self, sha: str, force: bool = False) -> tuple[BuildContext, str]:
        """Checkout and hash `sha`; the context is still open (call ctx.cleanup.close())."""
        ctx = self.context(sha, force)
        checkout_stage(ctx)
        detail = self.hash_stage(ctx).detail or ""
        return ctx, detail

    def train(self, sha: str, force: bool = False) -> tuple[BuildContext, str, Outcome]:
        ctx, detail = self.hash(sha, force)
        outcome = self.train_stage(ctx)
        return ctx, detail, outcome


def fake_model(folder: Path, marker: str = "stored", macro_f1: float = 0.9) -> Path:
    """Files that pass for a trained model as far as the train stage is concerned."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("model.joblib", "vectorizer.joblib"):
        (folder / name).write_text(f"{marker} {name}")
    (folder / "metrics.json").write_text(json.dumps({"macro_f1": macro_f1, "marker": marker}))
    return folder


def nltk_index(folder: Path) -> str:
    """A local NLTK index (file:// URL) serving a stopwords zip, as NLTK's downloader reads it."""
    import hashlib

    folder.mkdir(parents=True, exist_ok=True)
    words = ("\n".join(STOPWORDS) + "\n").encode()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("stopwords/", b"")
        archive.writestr("stopwords/english", words)
    data = buffer.getvalue()
    (folder / "stopwords.zip").write_bytes(data)
    url = (folder / "stopwords.zip").as_uri()
    (folder / "index.xml").write_text(
        '<?xml version="1.0"?><nltk_data><packages>\n'
        f' <package id="stopwords" name="Stopwords Corpus" subdir="corpora" unzip="1" url="{url}"'
        f' size="{len(data)}" unzipped_size="{len(words)}"'
        f' checksum="{hashlib.md5(data).hexdigest()}"'
        f' sha256_checksum="{hashlib.sha256(data).hexdigest()}"/>\n'
        "</packages><collections/></nltk_data>\n",
        encoding="utf-8",
    )
    return (folder / "index.xml").as_uri()


Factory = Callable[..., Builds]

"""The hash stage: pick the training data and compute the deps, nltk and model cache keys."""

from __future__ import annotations

import functools
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import trainer
from trainer.nltkdata import nltk_cache_key_material
from trainer.params import TrainParams
from trainhook.builds import set_cache_key
from worker.checkout import git
from worker.context import BuildContext, CacheKeys, DataChoice
from worker.stage import Outcome, StageFailed

# Bump when the meaning of a key changes, so old cache entries are never matched.
KEY_VERSION = 1
GENERATED_SAMPLE = "<generated sample>"
LFS_POINTER = b"version https://git-lfs.github.com/spec/"


def canonical_hash(value: Any) -> str:
    """sha256 of the canonical JSON of `value` (sorted keys, no whitespace, UTF-8)."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def pick_data(source: Path, candidates: tuple[str, ...]) -> tuple[str, str] | None:
    """The first candidate that exists in the checkout, as (configured path, real path
    relative to the checkout), or None. A candidate leaving the checkout through a symlink,
    or that is not a regular file, fails the stage."""
    root = source.resolve()
    for candidate in candidates:
        path = source / candidate
        if not os.path.lexists(path):
            continue
        real = path.resolve()
        if not real.is_relative_to(root):
            raise StageFailed(f"data path {candidate!r} is a symlink leaving the checkout")
        if not real.exists():
            raise StageFailed(f"data path {candidate!r} is a dangling symlink")
        if not real.is_file():
            raise StageFailed(f"data path {candidate!r} is not a regular file")
        return candidate, real.relative_to(root).as_posix()
    return None


def content_id(mirror: Path, sha: str, source: Path, rel: str) -> str:
    """The file's git blob id (content-addressed: no data byte is read), or a streaming
    sha256 of the exported file when git does not track the path. A Git LFS pointer (a tiny
    blob: only those are opened) fails the stage, since LFS content is not fetched."""
    listing = git("ls-tree", "-l", sha, "--", rel, cwd=mirror).strip()
    if listing:
        meta = listing.split("\t", 1)[0].split()
        blob, size = meta[2], int(meta[3]) if meta[3].isdigit() else 0
        if size < 1024:
            with (source / rel).open("rb") as head:
                if head.read(len(LFS_POINTER)) == LFS_POINTER:
                    raise StageFailed(
                        f"data file {rel!r} is a Git LFS pointer; LFS content is not "
                        "fetched: commit the data itself or configure another data path"
                    )
        return "git:" + blob
    digest = hashlib.sha256()
    with (source / rel).open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return "sha256:" + digest.hexdigest()


def deps_files(mirror: Path, sha: str) -> list[tuple[str, str]]:
    """(name, blob id) of the lock and requirements files at the root of the commit."""
    listing = git("ls-tree", sha, cwd=mirror)
    found = []
    for line in listing.splitlines():
        meta, _, name = line.partition("\t")
        kind, blob = meta.split()[1:3]
        wanted = name in ("uv.lock", "pyproject.toml") or (
            name.startswith("requirements") and name.endswith(".txt")
        )
        if kind == "blob" and wanted:
            found.append((name, blob))
    return sorted(found)


@functools.cache
def nltk_key() -> str:
    """The nltk level key; computed once per process (it imports nltk for its version)."""
    return canonical_hash(nltk_cache_key_material())


def compute_keys(ctx: BuildContext, data: DataChoice) -> CacheKeys:
    assert ctx.mirror is not None
    deps = canonical_hash({"files": deps_files(ctx.mirror, ctx.build.sha)})
    nltk = nltk_key()
    model = canonical_hash(
        {
            "key_version": KEY_VERSION,
            "trainer_version": trainer.TRAINER_VERSION,
            # Every hyperparameter, defaults included: a changed default retrains.
            "params": TrainParams(
                text_column=ctx.repo.text_column, label_column=ctx.repo.label_column
            ).to_dict(),
            "data": [[data.path or GENERATED_SAMPLE, data.content_id]],
        }
    )
    return CacheKeys(deps=deps, nltk=nltk, model=model)


def hash_stage(ctx: BuildContext) -> Outcome:
    """Choose the data file, compute the three keys, store the model key on the build."""
    source = ctx.need_source()
    if ctx.mirror is None:
        raise RuntimeError("no mirror: the checkout stage has not run")
    picked = pick_data(source, ctx.repo.data)
    if picked is None:
        data = DataChoice(None, f"trainer-{trainer.TRAINER_VERSION}", ctx.repo.data)
        used = (
            "NO DATA FILE FOUND (looked for " + ", ".join(ctx.repo.data) + "): "
            "TRAINING ON THE TRAINER'S GENERATED SAMPLE, NOT ON YOUR DATA"
        )
    else:
        configured, real = picked
        data = DataChoice(real, content_id(ctx.mirror, ctx.build.sha, source, real), ctx.repo.data)
        via = f" (via {configured})" if configured != real else ""
        used = f"data {real}{via} {data.content_id[:16]}"
    keys = compute_keys(ctx, data)
    ctx.data, ctx.keys = data, keys
    with ctx.engine.begin() as conn:
        set_cache_key(conn, ctx.build.id, keys.model)
    ctx.log("hash", f"{used}\ndeps key {keys.deps}\nnltk key {keys.nltk}\nmodel key {keys.model}\n")
    return Outcome(
        detail=f"{used}; keys model {keys.model[:12]} deps {keys.deps[:12]} nltk {keys.nltk[:12]}"
    )

"""The hash stage: pick the training data, compute the deps, nltk and model cache keys, and
decide for each level, before any training, whether the artifact store already has it.

Keys are sha256 of canonical JSON (sorted keys, no whitespace, UTF-8):
- deps  = {key version, (name, git blob id) of uv.lock, pyproject.toml, requirements*.txt};
- nltk  = the trainer's NLTK packages and the NLTK version (no nltk import: see trainer);
- model = {key version, trainer version, every training param, data manifest [(path, id)]}.
Content ids come from `worker.hash.gittree`: no data byte is read for data tracked by git.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trainer
from trainer.nltkdata import NLTK_PACKAGES, nltk_cache_key_material, nltk_version
from trainer.params import ParamsError, TrainParams
from trainhook.artifacts import ArtifactStore, open_store
from trainhook.builds import set_cache_key
from trainhook.gcs import make_gcs_client
from trainhook.repos import RepoConfig
from worker.context import BuildContext
from worker.hash.decision import (
    EXPLAIN_MARK,
    INPUTS_MARK,
    CacheDecision,
    CacheKeys,
    DataChoice,
    Level,
)
from worker.hash.explain import explain, previous_inputs
from worker.hash.gcsobjects import gcs_object
from worker.hash.gittree import (
    TreeFacts,
    TreeReader,
    exported_unchanged,
    lfs_object,
    read_pointer,
)
from worker.hash.statcache import StatCache
from worker.stage import Outcome, StageFailed

if TYPE_CHECKING:
    from google.cloud.storage import Client

log = logging.getLogger(__name__)

# Bump when the meaning of a key changes, so old cache entries are never matched.
KEY_VERSION = 1
GENERATED_SAMPLE = "<generated sample>"
LEVELS = ("deps", "nltk", "model")


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def canonical_hash(value: Any) -> str:
    """sha256 of the canonical JSON of `value` (sorted keys, no whitespace, UTF-8)."""
    return hashlib.sha256(canonical_json(value).encode("utf-8")).hexdigest()


def deps_key(files: list[tuple[str, str]]) -> str:
    """The deps level: the lock and requirements files, by (name, blob id)."""
    return canonical_hash(
        {"key_version": KEY_VERSION, "files": [list(item) for item in sorted(files)]}
    )


@functools.cache
def installed_nltk_version() -> str:
    """The NLTK version, read once per process (distribution metadata costs milliseconds)."""
    return nltk_version()


@functools.cache
def nltk_key() -> str:
    """The nltk level: the trainer's NLTK packages and the NLTK version."""
    return canonical_hash(nltk_cache_key_material())


def model_key(trainer_version: str, params: dict[str, Any], data: list[tuple[str, str]]) -> str:
    """The model level: what training produces depends on exactly these."""
    return canonical_hash(
        {
            "key_version": KEY_VERSION,
            "trainer_version": trainer_version,
            # Every hyperparameter, defaults included: a changed default retrains.
            "params": params,
            "data": [list(item) for item in data],
        }
    )


def is_deps_file(name: str) -> bool:
    return name in ("uv.lock", "pyproject.toml") or (
        name.startswith("requirements") and name.endswith(".txt")
    )


def deps_files(facts: TreeFacts) -> list[tuple[str, str]]:
    """(name, blob id) of the lock and requirements files at the root of the commit."""
    return sorted(
        (name, entry.oid)
        for name, entry in facts.root.items()
        if is_deps_file(name) and entry.mode not in ("40000", "160000")
    )


def train_params(repo: RepoConfig) -> TrainParams:
    try:
        return TrainParams.from_dict(repo.train_params)
    except ParamsError as exc:
        raise StageFailed(f"training params of {repo.name}: {exc}") from None


def nltk_needed(params: TrainParams) -> tuple[str, ...]:
    """The NLTK packages training with `params` reads (only stopword removal needs any)."""
    return tuple(NLTK_PACKAGES) if params.stopwords else ()


# --- choosing the data ----------------------------------------------------------------------


def pick_data(source: Path, candidates: tuple[str, ...]) -> tuple[str, str] | None:
    """The first local candidate that exists in the checkout, as (configured path, real path
    relative to the checkout), or None. gs:// candidates are not looked at here. A
    candidate leaving the checkout through a symlink, or not a regular file, fails the stage."""
    for index in range(len(candidates)):
        found = _pick_one(source, candidates[index])
        if found is not None:
            return found
    return None


def _pick_one(source: Path, candidate: str) -> tuple[str, str] | None:
    if candidate.startswith("gs://"):
        return None
    path = source / candidate
    if not os.path.lexists(path):
        return None
    root = source.resolve()
    real = path.resolve()
    if not real.is_relative_to(root):
        raise StageFailed(f"data path {candidate!r} is a symlink leaving the checkout")
    if not real.exists():
        raise StageFailed(f"data path {candidate!r} is a dangling symlink")
    if not real.is_file():
        raise StageFailed(f"data path {candidate!r} is not a regular file")
    return candidate, real.relative_to(root).as_posix()


@dataclass
class Sources:
    """What the data choice may need besides the checkout: a Cloud Storage client (made on
    first use unless given) and the stat cache for files git does not vouch for."""

    stat_cache: StatCache
    gcs_factory: Callable[[], Client] = make_gcs_client
    _gcs: Client | None = None

    @property
    def gcs(self) -> Client:
        if self._gcs is None:
            self._gcs = self.gcs_factory()
        return self._gcs


def choose_data(
    mirror: Path, sha: str, source: Path, candidates: tuple[str, ...], sources: Sources
) -> tuple[DataChoice, str | None, TreeFacts]:
    """The data to train on with its content id, the configured name it was found under,
    and the commit's facts (read in one git process, shared with the deps level)."""
    chosen: tuple[str, str] | None = None
    remote = None
    reader = TreeReader(mirror, sha)  # git starts while the checkout is looked at
    try:
        for candidate in candidates:
            if candidate.startswith("gs://"):
                remote = gcs_object(sources.gcs, candidate)
                if remote is not None:
                    break
                continue
            chosen = _pick_one(source, candidate)
            if chosen is not None:
                break
    except BaseException:
        reader.close()
        raise
    facts = reader.facts([chosen[1]] if chosen else [])
    if remote is not None:
        choice = DataChoice(
            remote.url, remote.content_id, candidates, "gs", None, remote.size, remote
        )
        return choice, remote.url, facts
    if chosen is None:
        sample = DataChoice(None, f"trainer-{trainer.TRAINER_VERSION}", candidates, "sample")
        return sample, None, facts
    configured, real = chosen
    path = source / real
    info = path.stat()
    entry = facts.paths.get(real)
    if entry is not None and entry.is_file and exported_unchanged(info, facts.commit_time):
        # The file is the blob `git archive` wrote for this commit, untouched since.
        pointer = read_pointer(path, info)
        if pointer is not None:
            # The content lives in Git LFS: the mirror's LFS store has it, or nothing does.
            local = lfs_object(mirror, pointer)
            choice = DataChoice(real, pointer.content_id, candidates, "lfs", local, pointer.size)
            return choice, configured, facts
        content_id = f"git:{entry.oid}"
        attributes = facts.attributes.get(real) or ()
        if attributes:
            # .gitattributes can change what archive writes (eol, ident, export-subst) while
            # the blob stays the same: they are part of the id.
            content_id += "@" + canonical_hash(list(attributes))[:16]
        choice = DataChoice(real, content_id, candidates, "git", path, info.st_size)
        return choice, configured, facts
    # Not tracked, or changed after the checkout (say, by the test stage): hash the file.
    digest, cached = sources.stat_cache.digest(path)
    read = 0 if cached else info.st_size
    choice = DataChoice(real, digest, candidates, "file", path, info.st_size, None, read)
    return choice, configured, facts


# --- the decision ---------------------------------------------------------------------------


def _lookup(store: ArtifactStore, level: Level, kind: str) -> None:
    problems: list[str] = []
    level.entry = store.lookup(kind, level.key, problems.append)
    level.result = "hit" if level.entry is not None else "miss"
    level.problem = problems[0] if problems else None


def decide(
    mirror: Path,
    sha: str,
    source: Path,
    repo: RepoConfig,
    store: ArtifactStore,
    sources: Sources,
    *,
    force: bool = False,
) -> CacheDecision:
    """Choose the data, compute the keys and look each level up in the store. Reads no
    data byte for data tracked by git; runs one git process; no training, no download."""
    started = time.perf_counter()
    data, configured, facts = choose_data(mirror, sha, source, repo.data, sources)
    chosen_params = train_params(repo)
    params = chosen_params.to_dict()
    deps_list = deps_files(facts)
    packages = nltk_needed(chosen_params)
    keys = CacheKeys(
        deps=deps_key(deps_list),
        nltk=nltk_key(),
        model=model_key(
            trainer.TRAINER_VERSION, params, [(data.path or GENERATED_SAMPLE, data.content_id)]
        ),
    )
    deps, nltk, model = (
        Level("deps", keys.deps),
        Level("nltk", keys.nltk),
        Level("model", keys.model),
    )
    if force:
        for level in (deps, model):
            level.result, level.why = "miss", "forced rebuild"
    else:
        _lookup(store, deps, "deps")
        _lookup(store, model, "models")
    if model.result == "hit":
        nltk.result, nltk.why = "unused", "the model is reused"
    elif not packages:
        nltk.result, nltk.why = "unused", "these training params read no NLTK data"
    elif force:
        nltk.result, nltk.why = "miss", "forced rebuild"
    else:
        _lookup(store, nltk, "nltk")
    inputs = {
        "v": 1,
        "deps": {"key": keys.deps, "files": dict(deps_list)},
        "nltk": {
            "key": keys.nltk,
            "nltk_version": installed_nltk_version(),
            "packages": sorted(NLTK_PACKAGES),
            "needed": list(packages),
        },
        "model": {
            "key": keys.model,
            "trainer_version": trainer.TRAINER_VERSION,
            "params": params,
            "data": {"path": data.path, "id": data.content_id, "configured": configured},
        },
    }
    return CacheDecision(
        store=store,
        data=data,
        keys=keys,
        deps=deps,
        nltk=nltk,
        model=model,
        nltk_packages=packages,
        params=params,
        inputs=inputs,
        configured=configured,
        seconds=time.perf_counter() - started,
    )


# --- the stage ------------------------------------------------------------------------------


def record_deps(ctx: BuildContext, decision: CacheDecision) -> None:
    """Store the deps level's entry (its files and the build that first used them): the key
    a builder's image layer cache and venvs are named by."""
    level = decision.deps
    if level.result == "hit":
        return
    with tempfile.TemporaryDirectory(prefix="deps-") as folder:
        Path(folder, "deps.json").write_text(
            canonical_json(decision.inputs["deps"]) + "\n", encoding="utf-8"
        )
        meta = {"build_id": ctx.build.id, "repo": ctx.repo.name, "sha": ctx.build.sha}
        try:
            entry, _ = decision.store.publish("deps", level.key, Path(folder), meta)
        except Exception as exc:  # the record is a convenience: never fail a build for it
            log.warning("could not record deps key %s: %s", level.key[:12], exc)
            return
    level.entry = entry


def make_hash_stage(
    store: ArtifactStore | None = None,
    gcs_client: Client | None = None,
) -> Callable[[BuildContext], Outcome]:
    """The hash stage over `store` (default: TRAINHOOK_ARTIFACTS). `gcs_client` is used for
    gs:// data (default: the store's client, else one made on first use)."""
    caches: dict[Path, StatCache] = {}
    made: dict[str, Client] = {}

    def shared_client() -> Client:
        """One client for gs:// data over the life of this stage (made on first use)."""
        if "client" not in made:
            made["client"] = make_gcs_client()
        return made["client"]

    def hash_stage(ctx: BuildContext) -> Outcome:
        source = ctx.need_source()
        if ctx.mirror is None:
            raise RuntimeError("no mirror: the checkout stage has not run")
        used_store = store if store is not None else open_store(ctx.settings.artifacts)
        client = gcs_client if gcs_client is not None else getattr(used_store, "client", None)
        stat_path = ctx.settings.home / "cache" / "stat-cache.sqlite"
        stat_cache = caches.setdefault(stat_path, StatCache(stat_path))
        sources = Sources(stat_cache, shared_client, client)
        decision = decide(
            ctx.mirror,
            ctx.build.sha,
            source,
            ctx.repo,
            used_store,
            sources,
            force=ctx.build.force,
        )
        ctx.data, ctx.keys, ctx.cache = decision.data, decision.keys, decision
        with ctx.engine.begin() as conn:
            set_cache_key(conn, ctx.build.id, decision.keys.model)
        previous = previous_inputs(ctx.engine, ctx.build)
        explain(decision, previous, ref=ctx.build.ref)
        record_deps(ctx, decision)
        metrics = ctx.recorder.metrics.cache
        metrics.labels(level="deps", result=decision.deps.result).inc()
        ctx.log("hash", log_text(decision))
        # The data first: the dashboard reads the first "data <path>" as the data file.
        data = data_line(decision.data, decision.configured)
        return Outcome(detail=f"{data} · {decision.summary()}")

    return hash_stage


def hash_stage(ctx: BuildContext) -> Outcome:
    """The hash stage over the configured store (see `make_hash_stage`)."""
    return make_hash_stage()(ctx)


def short_id(content_id: str, width: int = 12) -> str:
    kind, _, value = content_id.rpartition(":")
    return f"{kind}:{value[:width]}" if kind else value[:width]


def data_line(data: DataChoice, configured: str | None = None) -> str:
    if data.path is None:
        return (
            "NO DATA FILE FOUND (looked for " + ", ".join(data.candidates) + "): "
            "TRAINING ON THE TRAINER'S GENERATED SAMPLE, NOT ON YOUR DATA"
        )
    how = {
        "git": "git blob, 0 data bytes read",
        "lfs": "Git LFS oid from the pointer, 0 data bytes read",
        "gs": "object metadata, 0 data bytes read",
        "file": f"streaming blake3, {data.bytes_read} bytes read",
    }.get(data.source, data.source)
    via = f" (via {configured})" if configured and configured != data.path else ""
    return f"data {data.path}{via} {short_id(data.content_id)} ({how})"


def log_text(decision: CacheDecision) -> str:
    keys = decision.keys
    lines = [
        data_line(decision.data, decision.configured),
        f"data content id {decision.data.content_id}",
        f"deps key {keys.deps}",
        f"nltk key {keys.nltk}",
        f"model key {keys.model}",
        *(level.text() for level in decision.levels),
        *(f"{level.name}: {level.problem}" for level in decision.levels if level.problem),
        f"decided in {decision.seconds * 1000:.1f} ms",
        INPUTS_MARK + canonical_json(decision.inputs),
        EXPLAIN_MARK + canonical_json(decision.explanation()),
    ]
    return "\n".join(lines) + "\n"

"""The hash stage: pick the training data, compute the deps, nltk and model cache keys, and
decide for each level, before any training, whether the artifact store already has it.

Keys are sha256 of canonical JSON (sorted keys, no whitespace, UTF-8), and every one holds
the cache scope (`cache_scope`): the repository, or the cache group an operator named.
- deps  = {key version, scope, (name, git blob id) of uv.lock, pyproject.toml,
  requirements*.txt};
- nltk  = {key version, scope, the trainer's NLTK packages and the NLTK version} (no nltk
  import: see trainer);
- model = {key version, scope, trainer version, every training param, content ids of the
  data} (not the data's path: the same bytes moved within the repository are the same model).
Content ids come from `worker.hash.gittree`, read from the mirror's object store only: the data
is chosen in the commit's tree and no data byte is read; the export is never looked at.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
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
from trainhook.builds import STAGES, mark_finished, set_cache_key
from trainhook.gcs import make_gcs_client
from trainhook.repos import RepoConfig
from trainhook.schedules import deployed_model_key
from worker.context import BuildContext
from worker.git import redact
from worker.hash.decision import (
    EXPLAIN_MARK,
    INPUTS_MARK,
    CacheDecision,
    CacheKeys,
    DataChoice,
    Level,
    Scope,
)
from worker.hash.explain import explain, previous_inputs
from worker.hash.gcsobjects import gcs_object
from worker.hash.gittree import (
    DataPathError,
    FoundFile,
    TreeFacts,
    TreeReader,
    lfs_object,
)
from worker.stage import Outcome, StageFailed

if TYPE_CHECKING:
    from google.cloud.storage import Client

log = logging.getLogger(__name__)

# Bump when the meaning of a key changes, so old cache entries are never matched.
# 2: every key holds the cache scope (the repository or its cache group); the model key names
#    its data by content id alone (before: (path, content id)).
KEY_VERSION = 2
LEVELS = ("deps", "nltk", "model")


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def canonical_hash(value: Any) -> str:
    """sha256 of the canonical JSON of `value` (sorted keys, no whitespace, UTF-8)."""
    return hashlib.sha256(canonical_json(value).encode("utf-8")).hexdigest()


def cache_scope(repo: RepoConfig) -> Scope:
    """Whose cache entries a build of `repo` may use: its own, named by provider, name and
    clone URL (credentials left out, so rotating them keeps the cache), or those of the
    cache group an operator named for it (`cache_group`), shared with every repository
    naming the same group.

    Without it, two repositories with the same data blob (or one committing an LFS pointer
    with another's oid, which the other's public hash log shows) shared a model, and with it
    a vocabulary built from the other's training text."""
    if repo.cache_group:
        return {"group": repo.cache_group}
    return {"repo": f"{repo.provider}:{repo.name}", "clone_url": redact(repo.clone_url)}


def deps_key(files: list[tuple[str, str]], scope: Scope) -> str:
    """The deps level: the lock and requirements files, by (name, blob id), in `scope`."""
    return canonical_hash(
        {
            "key_version": KEY_VERSION,
            "scope": scope,
            "files": [list(item) for item in sorted(files)],
        }
    )


@functools.cache
def installed_nltk_version() -> str:
    """The NLTK version, read once per process (distribution metadata costs milliseconds)."""
    return nltk_version()


@functools.cache
def _nltk_material() -> str:
    """The NLTK packages and version as canonical JSON, read once per process."""
    return nltk_cache_key_material()


def nltk_key(scope: Scope) -> str:
    """The nltk level: the trainer's NLTK packages and the NLTK version, in `scope`."""
    return canonical_hash(
        {"key_version": KEY_VERSION, "scope": scope, "nltk": json.loads(_nltk_material())}
    )


def model_key(trainer_version: str, params: dict[str, Any], data: list[str], scope: Scope) -> str:
    """The model level: what training produces depends on exactly these, and the model
    belongs to `scope`. `data` are the content ids of the data trained on: not its path,
    which the trainer never reads into the model, so the same bytes touched, copied or moved
    within the repository are the same blob, the same id and the same model."""
    return canonical_hash(
        {
            "key_version": KEY_VERSION,
            "scope": scope,
            "trainer_version": trainer_version,
            # Every hyperparameter, defaults included: a changed default retrains.
            "params": params,
            "data": list(data),
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


@dataclass
class Sources:
    """What the data choice may need besides the mirror: a Cloud Storage client for gs://
    data (made on first use unless given)."""

    gcs_factory: Callable[[], Client] = make_gcs_client
    _gcs: Client | None = None

    @property
    def gcs(self) -> Client:
        if self._gcs is None:
            self._gcs = self.gcs_factory()
        return self._gcs


def git_content_id(found: FoundFile, facts: TreeFacts) -> str:
    """`git:<blob id>`, plus a digest of the .gitattributes above the file when there are
    any: they say how git means the file to be read (eol, encoding), and a change of them
    retrains once."""
    content_id = f"git:{found.entry.oid}"
    attributes = facts.attributes.get(found.path) or ()
    if attributes:
        content_id += "@" + canonical_hash(list(attributes))[:16]
    return content_id


def choose_data(
    mirror: Path, sha: str, candidates: tuple[str, ...], sources: Sources
) -> tuple[DataChoice, str | None, TreeFacts]:
    """The data to train on with its content id, the configured name it was found under,
    and the commit's facts (read in one git process, shared with the deps level).

    The first candidate that exists in the commit wins: a gs:// object that exists, or a
    path in the commit's tree (symlinks in the tree followed; one leaving the tree, dangling,
    or naming something other than a regular file fails the stage). Only the tree is asked,
    never the export: what the test stage did there cannot change the choice or the id."""
    found: FoundFile | None = None
    configured: str | None = None
    remote = None
    reader = TreeReader(mirror, sha)  # git starts while the first candidate is looked at
    try:
        for candidate in candidates:
            if candidate.startswith("gs://"):
                remote = gcs_object(sources.gcs, candidate)
                if remote is not None:
                    break
                continue
            try:
                found = reader.find(candidate)
            except DataPathError as exc:
                raise StageFailed(str(exc)) from None
            if found is not None:
                configured = candidate
                break
        facts = reader.facts([found.path] if found is not None else [])
    finally:
        reader.close()
    if remote is not None:
        choice = DataChoice(
            remote.url, remote.content_id, candidates, "gs", size=remote.size, remote=remote
        )
        return choice, remote.url, facts
    if found is None:
        sample = DataChoice(None, f"trainer-{trainer.TRAINER_VERSION}", candidates, "sample")
        return sample, None, facts
    if found.pointer is not None:
        # The content lives in Git LFS: the mirror's LFS store has it, or nothing does.
        pointer = found.pointer
        choice = DataChoice(
            found.path,
            pointer.content_id,
            candidates,
            "lfs",
            local=lfs_object(mirror, pointer),
            size=pointer.size,
            pointer=pointer,
        )
        return choice, configured, facts
    content_id = git_content_id(found, facts)
    choice = DataChoice(
        found.path, content_id, candidates, "git", size=found.size, blob=found.entry.oid
    )
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
    repo: RepoConfig,
    store: ArtifactStore,
    sources: Sources,
    *,
    force: bool = False,
) -> CacheDecision:
    """Choose the data, compute the keys and look each level up in the store. Reads the
    mirror only (never the export), no data byte; runs one git process; no training, no
    download."""
    started = time.perf_counter()
    data, configured, facts = choose_data(mirror, sha, repo.data, sources)
    chosen_params = train_params(repo)
    params = chosen_params.to_dict()
    deps_list = deps_files(facts)
    packages = nltk_needed(chosen_params)
    scope = cache_scope(repo)
    keys = CacheKeys(
        deps=deps_key(deps_list, scope),
        nltk=nltk_key(scope),
        model=model_key(
            trainer.TRAINER_VERSION,
            params,
            [data.content_id],
            scope,
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
    # Recorded for the next build's explanation; the scope and key version in every level,
    # so that a change of either is named as the reason for a miss.
    common = {"key_version": KEY_VERSION, "scope": scope}
    inputs = {
        "v": 1,
        "deps": {"key": keys.deps, **common, "files": dict(deps_list)},
        "nltk": {
            "key": keys.nltk,
            **common,
            "nltk_version": installed_nltk_version(),
            "packages": sorted(NLTK_PACKAGES),
            "needed": list(packages),
        },
        "model": {
            "key": keys.model,
            **common,
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
            # A forced build records itself, as it does every level it makes.
            entry, _ = decision.store.publish(
                "deps", level.key, Path(folder), meta, replace=ctx.build.force
            )
        except Exception as exc:  # the record is a convenience: never fail a build for it
            log.warning("could not record deps key %s: %s", level.key[:12], exc)
            return
    level.entry = entry


def end_if_unchanged(ctx: BuildContext, model: str) -> str | None:
    """End a scheduled or data build `superseded` when its model key is the one the branch's
    deployed build has (no new data, nothing new to train or deploy), unless the build is
    forced or, for a scheduled one, the repository says `schedule_force`; returns the reason,
    or None. A data event for bytes already deployed (the same file uploaded again, or an
    object that is not the `data` entry chosen) so builds nothing."""
    b = ctx.build
    if b.force or b.trigger not in ("schedule", "data"):
        return None
    if b.trigger == "schedule" and ctx.repo.schedule_force:
        return None
    with ctx.engine.begin() as conn:
        deployed = deployed_model_key(conn, b.provider, b.repo, b.ref, other_than=b.id)
        if deployed is None or deployed[1] != model:
            return None
        reason = f"model key unchanged since build #{deployed[0]}"
        if not mark_finished(conn, b.id, "superseded", error=reason):
            return None  # ended meanwhile: the worker stops at the next boundary
    for stage in ctx.recorder.stages:
        if STAGES.index(stage) > STAGES.index("hash") and stage not in ctx.recorder.done:
            ctx.recorder.skip(stage, reason)
    return reason


def make_hash_stage(
    store: ArtifactStore | None = None,
    gcs_client: Client | None = None,
) -> Callable[[BuildContext], Outcome]:
    """The hash stage over `store` (default: TRAINHOOK_ARTIFACTS). `gcs_client` is used for
    gs:// data (default: the store's client, else one made on first use)."""
    made: dict[str, Client] = {}

    def shared_client() -> Client:
        """One client for gs:// data over the life of this stage (made on first use)."""
        if "client" not in made:
            made["client"] = make_gcs_client()
        return made["client"]

    def hash_stage(ctx: BuildContext) -> Outcome:
        if ctx.mirror is None:
            raise RuntimeError("no mirror: the checkout stage has not run")
        used_store = store if store is not None else open_store(ctx.settings.artifacts)
        client = gcs_client if gcs_client is not None else getattr(used_store, "client", None)
        sources = Sources(shared_client, client)
        decision = decide(
            ctx.mirror,
            ctx.build.sha,
            ctx.repo,
            used_store,
            sources,
            force=ctx.build.force,
        )
        ctx.data, ctx.keys, ctx.cache = decision.data, decision.keys, decision
        with ctx.engine.begin() as conn:
            set_cache_key(conn, ctx.build.id, decision.keys.model)
        unchanged = end_if_unchanged(ctx, decision.keys.model)
        previous = previous_inputs(ctx.engine, ctx.build)
        explain(decision, previous, ref=ctx.build.ref)
        record_deps(ctx, decision)
        metrics = ctx.recorder.metrics.cache
        metrics.labels(level="deps", result=decision.deps.result).inc()
        ctx.log("hash", log_text(decision))
        # The data first: the dashboard reads the first "data <path>" as the data file.
        data = data_line(decision.data, decision.configured)
        if unchanged:
            return Outcome(detail=f"{data} · {unchanged}")
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

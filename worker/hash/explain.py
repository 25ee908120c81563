"""Why each cache level hit or missed: the inputs of this build against those recorded by
the previous build of the same branch (a JSON line in its hash log)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from trainhook.db import reading
from trainhook.models import builds, stage_logs
from worker.context import BuildInfo
from worker.hash.decision import INPUTS_MARK, CacheDecision, Level, scope_text

LOOK_BACK = 5  # earlier builds of the branch searched for a recorded set of inputs


@dataclass(frozen=True)
class Previous:
    build_id: int
    inputs: dict[str, Any]


def previous_inputs(engine: sa.Engine, build: BuildInfo) -> Previous | None:
    """The recorded inputs of the newest earlier build of the same repository and ref whose
    hash stage ran, or None (first build of the branch, or no record)."""
    with reading(engine) as conn:
        earlier = conn.execute(
            sa.select(builds.c.id)
            .where(
                builds.c.repo == build.repo,
                builds.c.provider == build.provider,
                builds.c.ref == build.ref,
                builds.c.id < build.id,
                builds.c.cache_key.is_not(None),
            )
            .order_by(builds.c.id.desc())
            .limit(LOOK_BACK)
        ).scalars()
        for build_id in list(earlier):
            texts = conn.execute(
                sa.select(stage_logs.c.text)
                .where(stage_logs.c.build_id == build_id, stage_logs.c.stage == "hash")
                .order_by(stage_logs.c.id)
            ).scalars()
            for line in "".join(texts).splitlines():
                if line.startswith(INPUTS_MARK):
                    try:
                        inputs = json.loads(line[len(INPUTS_MARK) :])
                    except ValueError:
                        break
                    if isinstance(inputs, dict) and inputs.get("v") == 1:
                        return Previous(build_id, inputs)
    return None


def short(content_id: str | None) -> str:
    """`git:1a2b…` as `blob 1a2b3c4`, and likewise for the other kinds of content id."""
    if not content_id:
        return "none"
    kind, _, value = content_id.rpartition(":")
    names = {"git": "blob", "lfs:sha256": "LFS", "gs:md5": "md5", "blake3": "blake3"}
    if kind.startswith("gs:crc32c"):
        return f"crc32c {value}"
    return f"{names.get(kind, kind)} {value[:7]}" if kind else value[:12]


def _same_kind(old: str, new: str) -> bool:
    return old.rpartition(":")[0] == new.rpartition(":")[0]


def scope_changes(now: dict[str, Any], before: dict[str, Any]) -> list[str]:
    """A change of key version or of cache scope (the repository, or the cache group an
    operator named): either makes every level a new key. Records from before the scope was
    keyed have neither field (key version 1)."""
    found: list[str] = []
    old_version, new_version = before.get("key_version", 1), now.get("key_version", 1)
    if old_version != new_version:
        found.append(f"cache key version {old_version}→{new_version}")
    old_scope, new_scope = before.get("scope"), now.get("scope")
    if old_scope is not None and old_scope != new_scope:
        found.append(f"cache scope {scope_text(old_scope)}→{scope_text(new_scope)}")
    return found


def changes(level: str, now: dict[str, Any], before: dict[str, Any]) -> list[str]:
    """What differs in one level's inputs, as short phrases naming the input."""
    found: list[str] = scope_changes(now, before)
    if level == "deps":
        old, new = before.get("files") or {}, now.get("files") or {}
        for name in sorted(set(old) | set(new)):
            if name not in old:
                found.append(f"{name} added")
            elif name not in new:
                found.append(f"{name} removed")
            elif old[name] != new[name]:
                found.append(f"{name} changed: blob {old[name][:7]}→{new[name][:7]}")
    elif level == "nltk":
        if before.get("nltk_version") != now.get("nltk_version"):
            found.append(f"NLTK {before.get('nltk_version')}→{now.get('nltk_version')}")
        if before.get("packages") != now.get("packages"):
            found.append(f"packages {before.get('packages')}→{now.get('packages')}")
    else:
        if before.get("trainer_version") != now.get("trainer_version"):
            found.append(f"trainer {before.get('trainer_version')}→{now.get('trainer_version')}")
        old_params, new_params = before.get("params") or {}, now.get("params") or {}
        for name in sorted(set(old_params) | set(new_params)):
            if old_params.get(name) != new_params.get(name):
                found.append(
                    f"param {name} {json.dumps(old_params.get(name))}→"
                    f"{json.dumps(new_params.get(name))}"
                )
        old_data, new_data = before.get("data") or {}, now.get("data") or {}
        path = new_data.get("path") or "generated sample"
        if old_data.get("path") != new_data.get("path"):
            found.append(f"training file {old_data.get('path') or 'generated sample'}→{path}")
        elif old_data.get("id") != new_data.get("id"):
            old_id, new_id = old_data.get("id") or "", new_data.get("id") or ""
            if _same_kind(old_id, new_id):
                kind = short(new_id).split(" ")[0]
                old_short, new_short = short(old_id).split(" ")[-1], short(new_id).split(" ")[-1]
                found.append(f"{path} changed: {kind} {old_short}→{new_short}")
            else:
                found.append(f"{path} changed: {short(old_id)}→{short(new_id)}")
    return found


def _unchanged(level: str, now: dict[str, Any]) -> str:
    if level == "deps":
        names = sorted(now.get("files") or {})
        return (", ".join(names) + " unchanged") if names else "no lock or requirements file"
    if level == "nltk":
        return "NLTK version and packages unchanged"
    data = (now.get("data") or {}).get("path") or "generated sample"
    return f"{data}, params and trainer unchanged"


def explain_level(level: Level, now: dict[str, Any], previous: Previous | None, branch: str) -> str:
    """The reason shown after hit/miss/unused, for a level decided on the current inputs."""
    if level.result == "unused" or level.why == "forced rebuild":
        return level.why
    if previous is None:
        base = f"first recorded build of {branch}"
        diff: list[str] = []
    else:
        before = previous.inputs.get(level.name) or {}
        diff = changes(level.name, now, before)
        base = (
            "; ".join(diff) if diff else f"{_unchanged(level.name, now)} since #{previous.build_id}"
        )
    if level.result == "hit":
        producer = f"build #{level.build_id}" if level.build_id else "an unknown build"
        if diff:
            return f"{base}; key {level.key[:12]} stored by {producer}"
        if previous is None:
            return f"key {level.key[:12]} stored by {producer}"
        return f"{_unchanged(level.name, now)}; stored by {producer}"
    # A miss.
    if level.problem:
        return f"stored entry unusable: {level.problem}"
    if previous is not None and not diff:
        return (
            f"{base}, but no stored entry for key {level.key[:12]} (not stored by that build, "
            "or evicted)"
        )
    return base


def explain(decision: CacheDecision, previous: Previous | None, ref: str) -> None:
    """Fill in each level's `why` from the inputs of the previous build of `ref`."""
    branch = ref.removeprefix("refs/heads/").removeprefix("refs/tags/") or "this branch"
    decision.previous_build = previous.build_id if previous else None
    for level in decision.levels:
        now = decision.inputs.get(level.name) or {}
        level.why = explain_level(level, now, previous, branch)

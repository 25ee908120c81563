"""What the hash stage decides and hands on: the data file chosen, the three cache keys and,
per level, hit or miss and why. Plain data, carried by the build context to later stages."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trainhook.artifacts import ArtifactStore, Entry

# The hash stage's log lines read back by the next build (inputs) and by people (explain).
INPUTS_MARK = "cache-inputs "
EXPLAIN_MARK = "cache-explain "


# Whose cache entries a build may use: {"repo", "clone_url"} or {"group"} (see
# worker/hash/keys.py cache_scope).
Scope = dict[str, str]


def scope_text(scope: Scope | None) -> str:
    """`repository github:octo/x` or `cache group team-nlp`, for explanations."""
    if not scope:
        return "no scope (before cache key version 2)"
    if "group" in scope:
        return f"cache group {scope['group']}"
    return f"repository {scope.get('repo')} ({scope.get('clone_url')})"


@dataclass(frozen=True)
class DataChoice:
    """The training data the hash stage picked: a path in the commit (or a gs:// URL) and
    its content id, or `path=None` when no configured file exists and the trainer generates
    a sample.

    `source` says how the content id was obtained: git (blob id), lfs (LFS oid), gs (object
    metadata) or sample. The bytes to train on come from where the id came from, never from
    the export: `blob` (git) is written out of the mirror's object store; `local` (lfs) is
    the object in the mirror's LFS store, None when it was never fetched, and `pointer` the
    oid and size it must match; `remote` (gs) is the object generation to download."""

    path: str | None
    content_id: str
    candidates: tuple[str, ...]
    source: str = "git"
    local: Path | None = None
    size: int | None = None
    remote: Any = None
    blob: str | None = None
    pointer: Any = None


@dataclass(frozen=True)
class CacheKeys:
    deps: str
    nltk: str
    model: str


@dataclass
class Level:
    """One cache level's outcome: hit, miss or unused (not needed by this build), and why."""

    name: str
    key: str
    result: str = "miss"
    why: str = ""
    entry: Entry | None = None
    problem: str | None = None  # a stored entry existed but was unusable

    @property
    def build_id(self) -> int | None:
        return self.entry.build_id if self.entry is not None else None

    def text(self) -> str:
        return f"{self.name}: {self.result}" + (f" ({self.why})" if self.why else "")

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "result": self.result,
            "why": self.why,
            "build": self.build_id,
        }


@dataclass
class CacheDecision:
    """The three levels for one build, decided before any training, and what they were
    decided from (`inputs`, recorded in the hash log for the next build's explanation)."""

    store: ArtifactStore
    data: DataChoice
    keys: CacheKeys
    deps: Level
    nltk: Level
    model: Level
    nltk_packages: tuple[str, ...]
    params: dict[str, Any]
    inputs: dict[str, Any] = field(default_factory=dict)
    configured: str | None = None  # the configured data entry that led to the file
    previous_build: int | None = None
    seconds: float = 0.0

    @property
    def levels(self) -> tuple[Level, Level, Level]:
        return (self.deps, self.nltk, self.model)

    def summary(self) -> str:
        return " · ".join(level.text() for level in self.levels)

    def explanation(self) -> dict[str, Any]:
        return {
            **{level.name: level.to_dict() for level in self.levels},
            "previous_build": self.previous_build,
        }

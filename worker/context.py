"""The state one build run carries from stage to stage."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from trainhook.models import builds
from trainhook.repos import RepoConfig
from trainhook.settings import Settings
from worker.hash.decision import CacheDecision, CacheKeys, DataChoice
from worker.recorder import Recorder


@dataclass(frozen=True)
class BuildInfo:
    """The row of the build being run (what to build, not how it is going)."""

    id: int
    provider: str
    repo: str
    ref: str
    sha: str
    status: str
    force: bool
    trigger: str = "push"

    @property
    def short_sha(self) -> str:
        return self.sha[:12]

    @classmethod
    def load(cls, conn: sa.Connection, build_id: int) -> BuildInfo | None:
        row = conn.execute(
            sa.select(
                builds.c.id,
                builds.c.provider,
                builds.c.repo,
                builds.c.ref,
                builds.c.sha,
                builds.c.status,
                builds.c.force,
                builds.c.trigger,
            ).where(builds.c.id == build_id)
        ).first()
        if row is None:
            return None
        return cls(
            id=row.id,
            provider=row.provider,
            repo=row.repo,
            ref=row.ref,
            sha=row.sha,
            status=row.status,
            force=bool(row.force),
            trigger=row.trigger,
        )


@dataclass(frozen=True)
class Bundle:
    """A packaged release: the tar.gz, its version (`b<build>-<sha12>`), size and sha256."""

    path: Path
    version: str
    digest: str
    size: int


@dataclass
class BuildContext:
    """Passed to every step. Earlier stages fill the optional fields later stages read."""

    settings: Settings
    repo: RepoConfig
    build: BuildInfo
    recorder: Recorder
    engine: sa.Engine
    attempt: int = 1
    earlier: frozenset[str] = frozenset()  # stages that succeeded in an earlier attempt
    mirror: Path | None = None
    source: Path | None = None  # the exported commit, a fresh directory under work_dir
    data: DataChoice | None = None
    keys: CacheKeys | None = None
    cache: CacheDecision | None = None  # per level: hit or miss, why, the stored entry
    model_dir: Path | None = None  # model.joblib, vectorizer.joblib, metrics.json, meta.json
    metrics: dict[str, Any] | None = None
    bundle: Bundle | None = None
    cleanup: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)

    def need_source(self) -> Path:
        """The checkout; a stage that needs it cannot run before `checkout` succeeded."""
        if self.source is None:
            raise RuntimeError("no checkout: the checkout stage has not run")
        return self.source

    def need_model(self) -> Path:
        if self.model_dir is None:
            raise RuntimeError("no model: the train stage has not run")
        return self.model_dir

    def log(self, stage: str, text: str) -> None:
        self.recorder.log(stage, text)

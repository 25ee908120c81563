"""Worker fixtures: a runtime over the test database, builds, and toy pipelines."""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from trainhook.builds import BuildSpec, create_build
from trainhook.buildview import get_build, get_logs
from trainhook.db import make_engine, reading
from trainhook.metrics import Metrics
from trainhook.models import jobs, stage_events
from trainhook.runtime import Runtime, build_runtime
from trainhook.settings import Settings
from worker.context import BuildContext, BuildInfo
from worker.pipeline import Pipeline
from worker.recorder import Recorder
from worker.stage import Outcome, SingleStage

REPO = "octo-org/social-score-api"
PIPELINE_STAGES = ("checkout", "test", "hash", "train", "build", "push", "deploy", "vertex")


@pytest.fixture(scope="session", autouse=True)
def child_bytecode_cache() -> Iterator[None]:
    """Let the Python children of these tests (trainer, health check, test commands) keep
    bytecode in a cache outside the tree. Without it, an environment that sets
    PYTHONDONTWRITEBYTECODE recompiles scikit-learn in every child: seconds per process."""
    saved = {k: os.environ.get(k) for k in ("PYTHONDONTWRITEBYTECODE", "PYTHONPYCACHEPREFIX")}
    saved_sys = (sys.dont_write_bytecode, sys.pycache_prefix)
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    cache = Path(tempfile.gettempdir()) / f"trainhook-test-pycache-{os.getuid()}"
    os.environ["PYTHONPYCACHEPREFIX"] = str(cache)
    # The same for this process, which imports nltk for the nltk cache key.
    sys.dont_write_bytecode, sys.pycache_prefix = False, str(cache)
    yield
    sys.dont_write_bytecode, sys.pycache_prefix = saved_sys
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture
def runtime(db_url: str, engine: sa.Engine, make_settings: Callable[..., Settings]) -> Runtime:
    return build_runtime(make_settings(db_url), engine)


def new_build(
    engine: sa.Engine, sha: str = "a" * 40, *, force: bool = False, repo: str = REPO
) -> int:
    with engine.begin() as conn:
        return create_build(
            conn,
            BuildSpec(provider="github", repo=repo, ref="refs/heads/main", sha=sha, force=force),
        )


def build_view(engine: sa.Engine, build_id: int) -> dict[str, Any]:
    with reading(engine) as conn:
        view = get_build(conn, build_id)
    assert view is not None
    return view


def stage_map(engine: sa.Engine, build_id: int) -> dict[str, dict[str, Any]]:
    return {s["name"]: s for s in build_view(engine, build_id)["stages"]}


def logs(engine: sa.Engine, build_id: int) -> dict[str, str]:
    with reading(engine) as conn:
        return get_logs(conn, build_id)


def job_row(engine: sa.Engine, build_id: int) -> Any:
    with reading(engine) as conn:
        return conn.execute(sa.select(jobs).where(jobs.c.build_id == build_id)).one()


def events(engine: sa.Engine, build_id: int, stage: str | None = None) -> list[tuple[str, str]]:
    query = sa.select(stage_events.c.stage, stage_events.c.status).where(
        stage_events.c.build_id == build_id
    )
    if stage:
        query = query.where(stage_events.c.stage == stage)
    with reading(engine) as conn:
        return [tuple(row) for row in conn.execute(query.order_by(stage_events.c.id))]


def toy_pipeline(
    overrides: dict[str, Callable[[BuildContext], Outcome]] | None = None,
) -> Pipeline:
    """Every pipeline stage succeeding at once, except those given in `overrides`."""
    overrides = overrides or {}

    def ok(ctx: BuildContext) -> Outcome:
        return Outcome(detail="ok")

    return Pipeline([SingleStage(name, overrides.get(name, ok)) for name in PIPELINE_STAGES])


@pytest.fixture
def sqlite_engine(sqlite_url: str) -> Iterator[sa.Engine]:
    """For tests about files and processes, not SQL: SQLite only, to keep the suite fast."""
    eng = make_engine(sqlite_url)
    yield eng
    eng.dispose()


def context_for(settings: Settings, engine: sa.Engine, build_id: int) -> BuildContext:
    """The context the worker would give the stages of `build_id` (no lease, no stop)."""
    with reading(engine) as conn:
        build = BuildInfo.load(conn, build_id)
    assert build is not None
    repo = settings.repo(build.repo, build.provider)
    assert repo is not None
    recorder = Recorder(engine, Metrics(), build_id, PIPELINE_STAGES)
    return BuildContext(settings=settings, repo=repo, build=build, recorder=recorder, engine=engine)

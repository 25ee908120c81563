"""Worker fixtures: a runtime over the test database, builds, and toy pipelines."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from tests.support.containers import own_dockerd
from trainhook.builds import BuildSpec, create_build
from trainhook.buildview import get_build, get_logs
from trainhook.db import reading
from trainhook.metrics import Metrics
from trainhook.models import jobs, stage_events
from trainhook.runtime import Runtime, build_runtime
from trainhook.settings import Settings
from worker.container.engine import Engine
from worker.context import BuildContext, BuildInfo
from worker.pipeline import Pipeline
from worker.recorder import Recorder
from worker.stage import Outcome, SingleStage

REPO = "octo-org/social-score-api"
PIPELINE_STAGES = ("checkout", "test", "hash", "train", "build", "push", "deploy", "vertex")


@pytest.fixture(scope="session")
def docker_daemon() -> Iterator[Engine | str]:
    """A docker daemon of the session's own (see `own_dockerd`), or why there is none: the
    docker variants of the container tests take it through `need_engine`."""
    with own_dockerd() as found:
        yield found


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


def context_for(settings: Settings, engine: sa.Engine, build_id: int) -> BuildContext:
    """The context the worker would give the stages of `build_id` (no lease, no stop)."""
    with reading(engine) as conn:
        build = BuildInfo.load(conn, build_id)
    assert build is not None
    repo = settings.repo(build.repo, build.provider)
    assert repo is not None
    recorder = Recorder(engine, Metrics(), build_id, PIPELINE_STAGES)
    return BuildContext(settings=settings, repo=repo, build=build, recorder=recorder, engine=engine)


def run_build(settings: Settings, engine: sa.Engine, sha: str) -> int:
    """Queue a build of `sha` and run it to the end with the real checkout and test stages
    (the rest are toys); returns the build id."""
    from worker.checkout import checkout_stage
    from worker.loop import Worker
    from worker.testcommand import repo_tests_stage

    build_id = new_build(engine, sha)
    pipeline = toy_pipeline({"checkout": checkout_stage, "test": repo_tests_stage})
    Worker(build_runtime(settings, engine), pipeline=pipeline).run(threading.Event(), burst=True)
    return build_id

"""Scheduled builds: a tick builds the branch head, and ends `superseded` at the hash stage
when the model key is the deployed build's (no new data) unless `schedule_force`."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime

import sqlalchemy as sa

from tests.support.gitrepo import GitRepo
from tests.worker.conftest import build_view, stage_map, toy_pipeline
from trainhook.builds import BuildSpec, create_build
from trainhook.runtime import build_runtime
from trainhook.schedules import fire_due
from trainhook.settings import Settings
from worker.checkout import checkout_stage
from worker.context import BuildContext
from worker.hash.keys import hash_stage
from worker.loop import Worker
from worker.stage import Outcome

REPO = "octo-org/social-score-api"
CSV = "text,label\nhappy day,pos\nsad day,neg\n"


def run(settings: Settings, engine: sa.Engine) -> list[int]:
    """Run every queued build (real checkout and hash stages); the builds that deployed."""
    deployed: list[int] = []

    def deploy(ctx: BuildContext) -> Outcome:
        deployed.append(ctx.build.id)
        return Outcome(detail="deployed")

    pipeline = toy_pipeline({"checkout": checkout_stage, "hash": hash_stage, "deploy": deploy})
    Worker(build_runtime(settings, engine), pipeline=pipeline).run(threading.Event(), burst=True)
    return deployed


def scheduled(settings: Settings, engine: sa.Engine, minute: int) -> int:
    now = datetime(2026, 12, 1, 3, minute, 30, tzinfo=UTC)
    fired = fire_due(engine, settings.repos, now)
    assert len(fired) == 1
    return fired[0].build_id


def test_a_schedule_builds_only_new_data_unless_forced(
    origin: GitRepo,
    make_settings: Callable[..., Settings],
    sqlite_url: str,
    sqlite_engine: sa.Engine,
):
    sha = origin.commit({"data/train.csv": CSV})
    settings = make_settings(sqlite_url, clone_url=origin.url, extra='schedule = "* * * * *"')
    with sqlite_engine.begin() as conn:
        first = create_build(conn, BuildSpec("github", REPO, "refs/heads/main", sha))
    assert run(settings, sqlite_engine) == [first]

    unchanged = scheduled(settings, sqlite_engine, 1)
    assert run(settings, sqlite_engine) == []
    view = build_view(sqlite_engine, unchanged)
    assert view["trigger"] == "schedule"
    assert view["status"] == "superseded"
    assert view["error"] == f"model key unchanged since build #{first}"
    stages = stage_map(sqlite_engine, unchanged)
    assert stages["hash"]["status"] == "succeeded"
    assert stages["train"]["status"] == stages["deploy"]["status"] == "skipped"

    origin.commit({"data/train.csv": CSV + "great day,pos\n"})  # new data: a new model
    changed = scheduled(settings, sqlite_engine, 2)
    assert run(settings, sqlite_engine) == [changed]
    assert build_view(sqlite_engine, changed)["status"] == "succeeded"

    forced = make_settings(
        sqlite_url, clone_url=origin.url, extra='schedule = "* * * * *"\nschedule_force = true'
    )
    again = scheduled(forced, sqlite_engine, 3)
    assert run(forced, sqlite_engine) == [again]


def test_a_data_build_of_bytes_already_deployed_ends_superseded(
    origin: GitRepo,
    make_settings: Callable[..., Settings],
    sqlite_url: str,
    sqlite_engine: sa.Engine,
):
    # As for a gs:// object uploaded again with the same bytes: the event queues a `data`
    # build of the branch head, whose model key is the deployed one.
    sha = origin.commit({"data/train.csv": CSV})
    settings = make_settings(sqlite_url, clone_url=origin.url)
    spec = BuildSpec("github", REPO, "refs/heads/main", "", trigger="data")
    with sqlite_engine.begin() as conn:
        first = create_build(conn, BuildSpec("github", REPO, "refs/heads/main", sha))
        same = create_build(conn, spec)
    assert run(settings, sqlite_engine) == [first]
    view = build_view(sqlite_engine, same)
    assert (view["trigger"], view["status"]) == ("data", "superseded")
    assert view["error"] == f"model key unchanged since build #{first}"

    origin.commit({"data/train.csv": CSV + "great day,pos\n"})
    with sqlite_engine.begin() as conn:
        changed = create_build(conn, spec)
    assert run(settings, sqlite_engine) == [changed]

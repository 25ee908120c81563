"""Repository schedules: keys checked with every problem at once, a due tick fires exactly
once (also with two schedulers racing on one database), and a downtime fires once."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa

from service.scheduler import Scheduler
from trainhook.db import make_engine
from trainhook.errors import ConfigError
from trainhook.models import builds, schedule_runs
from trainhook.repos import load_repos
from trainhook.schedules import fire_due, latest_tick
from trainhook.settings import Settings

NIGHTLY = 'schedule = "0 3 * * *"'


def at(day: int, hour: int, minute: int = 0, second: int = 0) -> datetime:
    return datetime(2026, 12, day, hour, minute, second, tzinfo=UTC)


def scheduled_builds(engine: sa.Engine) -> list[tuple[str, str, str]]:
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(builds.c.ref, builds.c.sha, builds.c.trigger).order_by(builds.c.id)
        ).all()
    return [tuple(row) for row in rows]


def test_the_latest_tick_is_at_or_before_now():
    assert latest_tick("0 3 * * *", at(2, 3)) == at(2, 3)
    assert latest_tick("0 3 * * *", at(2, 2, 59, 59)) == at(1, 3)
    assert latest_tick("*/15 * * * *", at(2, 8, 29, 10)) == at(2, 8, 15)


def test_a_due_tick_fires_once(make_settings: Callable[..., Settings], db_url: str):
    settings = make_settings(db_url, branches=("main", "release/*"), extra=NIGHTLY)
    engine = make_engine(db_url)
    try:
        assert fire_due(engine, settings.repos, at(2, 2)) != []  # yesterday's tick: missed once
        assert fire_due(engine, settings.repos, at(2, 2, 30)) == []
        fired = fire_due(engine, settings.repos, at(2, 3, 0, 5))
        assert [f.tick for f in fired] == [at(2, 3)]
        assert fire_due(engine, settings.repos, at(2, 3, 0, 25)) == []
        assert fire_due(engine, settings.repos, at(2, 12)) == []
        assert scheduled_builds(engine) == [("refs/heads/main", "", "schedule")] * 2
    finally:
        engine.dispose()


def test_after_downtime_a_schedule_fires_once(make_settings: Callable[..., Settings], db_url: str):
    settings = make_settings(db_url, extra='schedule = "*/5 * * * *"\nschedule_branch = "prod"')
    engine = make_engine(db_url)
    try:
        assert len(fire_due(engine, settings.repos, at(1, 9))) == 1
        # Down for a day and a half: hundreds of ticks missed, one build.
        fired = fire_due(engine, settings.repos, at(2, 21, 2))
        assert [f.tick for f in fired] == [at(2, 21)]
        assert fire_due(engine, settings.repos, at(2, 21, 4)) == []
        assert scheduled_builds(engine) == [("refs/heads/prod", "", "schedule")] * 2
    finally:
        engine.dispose()


def test_two_schedulers_racing_fire_once(make_settings: Callable[..., Settings], db_url: str):
    settings = make_settings(db_url, extra=NIGHTLY)
    engines = [make_engine(db_url) for _ in range(4)]
    start = threading.Barrier(len(engines))
    results: list[int] = []

    def replica(engine: sa.Engine) -> None:
        start.wait()
        for second in range(0, 40, 10):
            results.extend(
                f.build_id for f in fire_due(engine, settings.repos, at(2, 3, 0, second))
            )

    try:
        threads = [threading.Thread(target=replica, args=(e,)) for e in engines]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert len(results) == 1
        assert len(scheduled_builds(engines[0])) == 1
        with engines[0].connect() as conn:
            runs = conn.execute(sa.select(schedule_runs.c.tick, schedule_runs.c.build_id)).all()
        assert [tuple(r) for r in runs] == [(at(2, 3), results[0])]
    finally:
        for engine in engines:
            engine.dispose()


def test_the_scheduler_runs_only_with_a_schedule(
    make_settings: Callable[..., Settings], sqlite_url: str
):
    engine = make_engine(sqlite_url)
    try:
        assert not Scheduler(make_settings(sqlite_url), engine).enabled
        woken: list[list[int]] = []
        scheduler = Scheduler(make_settings(sqlite_url, extra=NIGHTLY), engine, woken.append)
        assert scheduler.enabled
        fired = scheduler.tick()
        assert woken == [[f.build_id for f in fired]] and len(fired) == 1
    finally:
        engine.dispose()


def test_bad_schedule_keys_are_all_reported(tmp_path: Path):
    config = tmp_path / "repos.toml"
    config.write_text(
        """
[[repos]]
name = "octo-org/a"
clone_url = "https://github.com/octo-org/a.git"
secret_env = "S"
schedule = "every night"

[[repos]]
name = "octo-org/b"
clone_url = "https://github.com/octo-org/b.git"
secret_env = "S"
branches = ["release/*"]
schedule = "0 3 * * * *"

[[repos]]
name = "octo-org/c"
clone_url = "https://github.com/octo-org/c.git"
secret_env = "S"
schedule_force = "yes"
"""
    )
    with pytest.raises(ConfigError) as raised:
        load_repos(config)
    text = str(raised.value)
    assert (
        f"{config}: repository 'octo-org/a': key 'schedule': 'every night' is not a cron "
        "expression (expected five fields" in text
    )
    assert "repository 'octo-org/b': key 'schedule': '0 3 * * * *' is not a cron" in text
    assert "repository 'octo-org/b': key 'branches': 'release/*' is not a branch a schedule" in text
    assert "repository 'octo-org/c': key 'schedule_force' has the wrong type" in text

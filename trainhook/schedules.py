"""Repository schedules (`schedule = "CRON"`, UTC): which tick is due, and firing it once.

A tick fires by inserting its `schedule_runs` row (unique per provider, repository and tick)
in the same transaction as the build it queues: of several service replicas, the one whose
insert commits first queues the build; the others' inserts conflict and queue nothing. Only
the newest tick at or before now is ever considered, so after downtime a schedule fires
once for all the ticks it missed, not once per missed tick.

A scheduled build (trigger `schedule`) builds the head of `schedule_branch`; its hash stage
ends it `superseded` when the model key equals that of the branch's deployed build, unless
the repository says `schedule_force = true` (worker/hash/keys.py, `deployed_model_key`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from croniter import croniter

from trainhook.builds import BuildSpec, create_build
from trainhook.models import builds, schedule_runs, utcnow
from trainhook.repos import RepoConfig
from trainhook.stale import branch_history

log = logging.getLogger(__name__)


def latest_tick(cron: str, now: datetime) -> datetime:
    """The newest tick of `cron` (UTC) at or before `now` (aware, UTC)."""
    # Ticks fall on whole minutes; get_prev is strictly before its start.
    start = now.astimezone(UTC).replace(microsecond=0) + timedelta(seconds=1)
    prev = croniter(cron, start).get_prev(datetime)
    assert isinstance(prev, datetime)
    return prev.astimezone(UTC)


@dataclass(frozen=True)
class Fired:
    """A tick this process fired: the repository, the tick and the build it queued."""

    repo: str
    tick: datetime
    build_id: int


def fire(engine: sa.Engine, repo: RepoConfig, tick: datetime) -> int | None:
    """Queue the build of `repo`'s tick unless a replica already did; the build id or None."""
    assert repo.schedule is not None
    spec = BuildSpec(
        provider=repo.provider,
        repo=repo.name,
        ref=f"refs/heads/{repo.scheduled_branch}",
        sha="",
        trigger="schedule",
    )
    try:
        with engine.begin() as conn:
            run = conn.execute(
                schedule_runs.insert().values(
                    provider=repo.provider,
                    repo=repo.name,
                    tick=tick,
                    build_id=None,
                    fired_at=utcnow(),
                )
            )
            key = run.inserted_primary_key
            assert key is not None
            build_id = create_build(conn, spec)
            conn.execute(
                schedule_runs.update().where(schedule_runs.c.id == key[0]).values(build_id=build_id)
            )
    except sa.exc.IntegrityError:
        return None  # another replica fired this tick
    return build_id


def fire_due(engine: sa.Engine, repos: tuple[RepoConfig, ...], now: datetime) -> list[Fired]:
    """Fire each scheduled repository's newest due tick that has not fired yet."""
    fired = []
    for repo in repos:
        if repo.schedule is None:
            continue
        tick = latest_tick(repo.schedule, now)
        with engine.connect() as conn:
            done = conn.execute(
                sa.select(schedule_runs.c.id).where(
                    schedule_runs.c.provider == repo.provider,
                    schedule_runs.c.repo == repo.name,
                    schedule_runs.c.tick == tick,
                )
            ).first()
        if done is not None:
            continue
        build_id = fire(engine, repo, tick)
        if build_id is not None:
            log.info("schedule: %s tick %s queued build #%d", repo.name, tick.isoformat(), build_id)
            fired.append(Fired(repo.name, tick, build_id))
    return fired


def deployed_model_key(
    conn: sa.Connection, provider: str, repo: str, ref: str, *, other_than: int
) -> tuple[int, str] | None:
    """(build id, model key) of the branch's deployed build (trainhook/stale.py), or None."""
    deployed = branch_history(conn, provider, repo, ref, other_than=other_than).deployed
    if deployed is None:
        return None
    key = conn.execute(
        sa.select(builds.c.cache_key).where(builds.c.id == deployed.build_id)
    ).scalar()
    return None if key is None else (deployed.build_id, str(key))

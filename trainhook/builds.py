"""Writing builds: creation with their job, append-only stage events, logs and final status."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa

from trainhook.models import builds, deliveries, jobs, stage_events, stage_logs, utcnow

# Stage names, in order (contract).
STAGES = (
    "received",
    "queued",
    "checkout",
    "test",
    "hash",
    "train",
    "build",
    "push",
    "deploy",
    "vertex",
)
TERMINAL_BUILD = frozenset({"succeeded", "failed", "cancelled", "superseded"})
# Why a build was made (contract): a tag push stays `push`.
TRIGGERS = ("push", "rebuild", "replay", "pull_request", "schedule", "data")


@dataclass(frozen=True)
class Delivery:
    """A webhook delivery whose signature held."""

    provider: str
    hook_id: str
    delivery_id: str
    event: str
    repo: str
    headers: Mapping[str, str]
    body: bytes
    received_at: datetime


@dataclass(frozen=True)
class BuildSpec:
    """What to build: the repository, the commit and why."""

    provider: str
    repo: str
    ref: str
    sha: str
    trigger: str = "push"
    before_sha: str | None = None
    force: bool = False
    commit_message: str | None = None
    author: str | None = None
    replay_of: int | None = None


_INSERT_BUILD = builds.insert()
_INSERT_EVENT = stage_events.insert()
_INSERT_JOB = jobs.insert()


def _event(
    build_id: int,
    stage: str,
    status: str,
    at: datetime,
    cache: str | None = None,
    detail: str | None = None,
) -> dict[str, object]:
    return {
        "build_id": build_id,
        "stage": stage,
        "status": status,
        "at": at,
        "cache": cache,
        "detail": detail,
    }


def _new_id(result: sa.CursorResult[object]) -> int:
    key = result.inserted_primary_key
    assert key is not None
    return int(key[0])


def find_delivery(
    conn: sa.Connection, provider: str, hook_id: str, delivery_id: str
) -> tuple[int, str, str | None, int | None] | None:
    """(delivery row id, outcome, reason, build id) of a recorded delivery, or None."""
    row = conn.execute(
        sa.select(deliveries.c.id, deliveries.c.outcome, deliveries.c.reason, builds.c.id)
        .select_from(deliveries.outerjoin(builds, builds.c.delivery_id == deliveries.c.id))
        .where(
            deliveries.c.provider == provider,
            deliveries.c.hook_id == hook_id,
            deliveries.c.delivery_id == delivery_id,
        )
        .order_by(builds.c.id)
        .limit(1)
    ).first()
    return None if row is None else (row[0], row[1], row[2], row[3])


def build_row(spec: BuildSpec, delivery_row: int | None, created_at: datetime) -> dict[str, object]:
    """The `builds` row of a new queued build."""
    return {
        "delivery_id": delivery_row,
        "provider": spec.provider,
        "repo": spec.repo,
        "ref": spec.ref,
        "sha": spec.sha,
        "before_sha": spec.before_sha,
        "trigger": spec.trigger,
        "status": "queued",
        "force": spec.force,
        "commit_message": spec.commit_message,
        "author": spec.author,
        "created_at": created_at,
        "replay_of": spec.replay_of,
    }


def opening_events(build_id: int, received_at: datetime, now: datetime) -> list[dict[str, object]]:
    """`received` (from arrival to commit) and the start of `queued`."""
    return [
        _event(build_id, "received", "running", received_at),
        _event(build_id, "received", "succeeded", now),
        _event(build_id, "queued", "running", now),
    ]


def job_row(build_id: int, now: datetime) -> dict[str, object]:
    """The `jobs` row that queues a build."""
    return {
        "build_id": build_id,
        "status": "queued",
        "attempts": 0,
        "available_at": now,
        "created_at": now,
        "lease_owner": None,
        "lease_until": None,
        "last_error": None,
    }


def create_build(
    conn: sa.Connection,
    spec: BuildSpec,
    *,
    delivery_row: int | None = None,
    received_at: datetime | None = None,
) -> int:
    """Insert a queued build, its `received`/`queued` stage events and its job row.

    Runs inside the caller's transaction, so the build and its job exist together or not at all.
    """
    if spec.trigger not in TRIGGERS:
        raise ValueError(f"unknown trigger {spec.trigger!r}")
    now = utcnow()
    received_at = received_at or now
    build_id = _new_id(conn.execute(_INSERT_BUILD, build_row(spec, delivery_row, received_at)))
    conn.execute(_INSERT_EVENT, opening_events(build_id, received_at, now))
    conn.execute(_INSERT_JOB, job_row(build_id, now))
    return build_id


def add_event(
    conn: sa.Connection,
    build_id: int,
    stage: str,
    status: str,
    *,
    detail: str | None = None,
    cache: str | None = None,
    at: datetime | None = None,
) -> None:
    """Append one stage event (stage rows are never updated in place)."""
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}")
    conn.execute(_INSERT_EVENT, _event(build_id, stage, status, at or utcnow(), cache, detail))


def append_log(conn: sa.Connection, build_id: int, stage: str, text: str) -> None:
    """Append a chunk of a stage's log."""
    if text:
        conn.execute(
            stage_logs.insert().values(build_id=build_id, stage=stage, at=utcnow(), text=text)
        )


def mark_started(conn: sa.Connection, build_id: int) -> None:
    """Set the build running (the first time only: a retried job keeps its first start)."""
    conn.execute(
        builds.update()
        .where(builds.c.id == build_id, builds.c.status.not_in(TERMINAL_BUILD))
        .values(status="running", started_at=sa.func.coalesce(builds.c.started_at, utcnow()))
    )


def mark_finished(
    conn: sa.Connection, build_id: int, status: str, error: str | None = None
) -> bool:
    """Move the build to a terminal status; False when it already was terminal (never regress)."""
    if status not in TERMINAL_BUILD:
        raise ValueError(f"{status!r} is not a terminal build status")
    result = conn.execute(
        builds.update()
        .where(builds.c.id == build_id, builds.c.status.not_in(TERMINAL_BUILD))
        .values(status=status, finished_at=utcnow(), error=error)
    )
    return result.rowcount == 1


def set_sha(conn: sa.Connection, build_id: int, sha: str) -> None:
    """Record the commit a build by ref resolved to (only while it has none)."""
    conn.execute(builds.update().where(builds.c.id == build_id, builds.c.sha == "").values(sha=sha))


def set_cache_key(conn: sa.Connection, build_id: int, key: str) -> None:
    conn.execute(builds.update().where(builds.c.id == build_id).values(cache_key=key))


def is_cancelled(conn: sa.Connection, build_id: int) -> bool:
    """True when someone else ended the build (cancelled, or superseded by a newer one).

    The worker calls this between stages and stops at that boundary: it records the stages
    it will not run as skipped and leaves the build's final status alone."""
    status = conn.execute(sa.select(builds.c.status).where(builds.c.id == build_id)).scalar()
    return status in ("cancelled", "superseded")


def cancel_build(conn: sa.Connection, build_id: int, reason: str) -> str | None:
    """Cancel a queued or running build in the caller's transaction.

    Returns "cancelled", the terminal status the build already had (nothing changes), or None
    when there is no such build. A stage event says why: on the stage running now (its status
    is left to the worker, which stops at the next stage boundary), or on `queued` (skipped)
    when no worker had picked the build up."""
    return end_build(conn, build_id, "cancelled", reason)


def end_build(conn: sa.Connection, build_id: int, status: str, reason: str) -> str | None:
    """End a queued or running build as `status` (cancelled, superseded) from outside its
    worker, as `cancel_build` describes; returns `status`, the terminal status the build
    already had, or None when there is no such build."""
    current = conn.execute(sa.select(builds.c.status).where(builds.c.id == build_id)).scalar()
    if current is None:
        return None
    if not mark_finished(conn, build_id, status, error=reason):
        return str(conn.execute(sa.select(builds.c.status).where(builds.c.id == build_id)).scalar())
    last = conn.execute(
        sa.select(stage_events.c.stage, stage_events.c.status)
        .where(stage_events.c.build_id == build_id)
        .order_by(stage_events.c.id.desc())
        .limit(1)
    ).first()
    if last is None or (last.stage == "queued" and last.status == "running"):
        add_event(conn, build_id, "queued", "skipped", detail=f"{status} ({reason})")
    elif last.status == "running":
        request = "cancel requested" if status == "cancelled" else status
        detail = f"{request} ({reason}); the worker stops after this stage"
        add_event(conn, build_id, last.stage, "running", detail=detail)
    elif last.stage in STAGES[:-1]:
        following = STAGES[STAGES.index(last.stage) + 1]
        add_event(conn, build_id, following, "skipped", detail=f"{status} ({reason})")
    return status

"""Reading builds: the JSON shape of the contract, derived from builds and stage events."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from trainhook.builds import STAGES
from trainhook.models import builds, stage_events, stage_logs

MAX_LIMIT = 200
# Builds that count for history statistics: finished, one way or another.
FINISHED = ("succeeded", "failed", "cancelled")


def iso(value: datetime | None) -> str | None:
    """RFC 3339 with a `Z`, millisecond precision; None stays None. (`value` is UTC, as
    every timestamp read from the database is.)"""
    if value is None:
        return None
    # isoformat is C code: the list page formats ~2,000 of these per request.
    return value.isoformat(timespec="milliseconds")[:23] + "Z"


def _seconds(start: datetime | None, end: datetime | None) -> float | None:
    if start is None or end is None:
        return None
    return round((end - start).total_seconds(), 3)


def _pending(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "status": "pending",
        "started_at": None,
        "finished_at": None,
        "duration_s": None,
        "cache": None,
        "detail": None,
    }


def fold_stages(events: Iterable[Any]) -> list[dict[str, Any]]:
    """Fold one build's events (ordered by id) into the contract's per-stage view: the last
    event's status, started at the first `running` event (else the first event), finished at
    the last event unless still running or pending, the latest cache result and detail."""
    by_stage: dict[str, list[Any]] = defaultdict(list)
    for event in events:
        by_stage[event.stage].append(event)
    stages = []
    for name in STAGES:
        evs = by_stage.get(name)
        if not evs:
            stages.append(_pending(name))
            continue
        started = cache = detail = None
        for event in evs:  # one pass: this runs for every stage of every build on a page
            if started is None and event.status == "running":
                started = event.at
            cache = event.cache or cache
            detail = event.detail or detail
        last = evs[-1]
        started = started or evs[0].at
        finished = last.at if last.status not in ("running", "pending") else None
        stages.append(
            {
                "name": name,
                "status": last.status,
                "started_at": iso(started),
                "finished_at": iso(finished),
                "duration_s": _seconds(started, finished) if last.status != "skipped" else 0.0,
                "cache": cache,
                "detail": detail,
            }
        )
    return stages


def _build_json(row: Any, events: Sequence[Any]) -> dict[str, Any]:
    end = row.finished_at
    return {
        "id": row.id,
        "repo": row.repo,
        "provider": row.provider,
        "ref": row.ref,
        "sha": row.sha,
        "before_sha": row.before_sha,
        "trigger": row.trigger,
        "force": bool(row.force),
        "status": row.status,
        "commit_message": row.commit_message,
        "author": row.author,
        "created_at": iso(row.created_at),
        "started_at": iso(row.started_at),
        "finished_at": iso(end),
        "duration_s": _seconds(row.created_at, end),
        "cache_key": row.cache_key,
        "error": row.error,
        "stages": fold_stages(events),
    }


def _events_for(conn: sa.Connection, ids: Sequence[int]) -> dict[int, list[Any]]:
    grouped: dict[int, list[Any]] = defaultdict(list)
    if not ids:
        return grouped
    # One query for every build on the page: no N+1.
    rows = conn.execute(
        sa.select(stage_events)
        .where(stage_events.c.build_id.in_(ids))
        .order_by(stage_events.c.build_id, stage_events.c.id)
    )
    for row in rows:
        grouped[row.build_id].append(row)
    return grouped


def load_build(conn: sa.Connection, build_id: int) -> tuple[dict[str, Any] | None, int]:
    """One build in the contract's JSON shape (or None) and its newest stage event id."""
    row = conn.execute(sa.select(builds).where(builds.c.id == build_id)).first()
    if row is None:
        return None, 0
    events = _events_for(conn, [build_id])[build_id]
    return _build_json(row, events), (events[-1].id if events else 0)


def get_build(conn: sa.Connection, build_id: int) -> dict[str, Any] | None:
    """One build in the contract's JSON shape, or None."""
    return load_build(conn, build_id)[0]


@dataclass(frozen=True)
class BuildPage:
    """One page of builds, the cursor of the next page and the newest stage event id read."""

    builds: list[dict[str, Any]]
    next: int | None
    last_event_id: int


def branch_ref(branch: str) -> str:
    """The ref a branch filter matches: `main` -> `refs/heads/main` (full refs are kept)."""
    return branch if branch.startswith("refs/") else f"refs/heads/{branch}"


def page_of_builds(
    conn: sa.Connection,
    *,
    repo: str | None = None,
    branch: str | None = None,
    status: str | None = None,
    limit: int = 50,
    before: int | None = None,
    trigger: str | None = None,
) -> BuildPage:
    """Newest first, keyset-paginated on id, in two queries (builds, then all their events)."""
    limit = max(1, min(limit, MAX_LIMIT))
    query = sa.select(builds).order_by(builds.c.id.desc()).limit(limit + 1)
    if repo:
        query = query.where(builds.c.repo == repo)
    if branch:
        query = query.where(builds.c.ref == branch_ref(branch))
    if status:
        query = query.where(builds.c.status == status)
    if trigger:
        query = query.where(builds.c.trigger == trigger)
    if before is not None:
        query = query.where(builds.c.id < before)
    rows = conn.execute(query).all()
    page, more = rows[:limit], len(rows) > limit
    events = _events_for(conn, [r.id for r in page])
    last = max((evs[-1].id for evs in events.values() if evs), default=0)
    items = [_build_json(r, events[r.id]) for r in page]
    return BuildPage(items, page[-1].id if more else None, last)


def list_builds(
    conn: sa.Connection,
    *,
    repo: str | None = None,
    status: str | None = None,
    limit: int = 50,
    before: int | None = None,
    branch: str | None = None,
) -> tuple[list[dict[str, Any]], int | None]:
    """Newest first, keyset-paginated on id: (builds, cursor for the next page or None)."""
    page = page_of_builds(conn, repo=repo, branch=branch, status=status, limit=limit, before=before)
    return page.builds, page.next


def recent_finished(conn: sa.Connection, repo: str, limit: int) -> list[dict[str, Any]]:
    """The last `limit` finished builds of a repository, newest first (two queries)."""
    rows = conn.execute(
        sa.select(builds)
        .where(builds.c.repo == repo, builds.c.status.in_(FINISHED))
        .order_by(builds.c.id.desc())
        .limit(max(1, limit))
    ).all()
    events = _events_for(conn, [r.id for r in rows])
    return [_build_json(r, events[r.id]) for r in rows]


def get_logs(conn: sa.Connection, build_id: int) -> dict[str, str]:
    """Each stage's log text, joined in order."""
    return get_logs_after(conn, build_id)[0]


def get_logs_after(
    conn: sa.Connection, build_id: int, after: int = 0
) -> tuple[dict[str, str], int]:
    """Each stage's log text after log row `after`, and the newest log row id read (or `after`)."""
    logs: dict[str, list[str]] = defaultdict(list)
    last = after
    rows = conn.execute(
        sa.select(stage_logs.c.id, stage_logs.c.stage, stage_logs.c.text)
        .where(stage_logs.c.build_id == build_id, stage_logs.c.id > after)
        .order_by(stage_logs.c.id)
    )
    for row_id, stage, text in rows:
        logs[stage].append(text)
        last = row_id
    return {stage: "".join(parts) for stage, parts in logs.items()}, last

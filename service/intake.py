"""Recording verified deliveries, many per transaction (group commit), each with its build.

A push that would take its branch back behind the deployed commit (a captured delivery
resent with a new delivery id, see trainhook/stale.py) is recorded as ignored, decided in
the same transaction that stores it. A pull request's new head supersedes the request's
older builds, and its close all of them, in that transaction too (trainhook/pullrequests.py)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from trainhook.builds import (
    BuildSpec,
    Delivery,
    build_row,
    find_delivery,
    job_row,
    opening_events,
)
from trainhook.models import builds, deliveries, jobs, stage_events, utcnow
from trainhook.pullrequests import supersede_pull_builds
from trainhook.stale import GUARDED_TRIGGERS, BranchHistory, branch_history


@dataclass(frozen=True)
class Incoming:
    """A delivery whose signature held, and the build it asks for (None: it is ignored)."""

    delivery: Delivery
    spec: BuildSpec | None
    reason: str | None = None
    # A pull request head ref whose queued and running builds end (superseded) when this
    # delivery is new: older than its build, or all of them (a close, no build).
    supersedes: str | None = None

    @property
    def key(self) -> tuple[str, str, str]:
        d = self.delivery
        return (d.provider, d.hook_id, d.delivery_id)


@dataclass(frozen=True)
class Recorded:
    """What storing one delivery gave: its build (if any), and whether it was seen before."""

    build_id: int | None
    duplicate: bool
    reason: str | None


def _insert_deliveries(conn: sa.Connection) -> sa.Insert:
    # ON CONFLICT DO NOTHING: a redelivery neither aborts the batch nor needs a savepoint.
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    return (
        dialect.insert(deliveries)
        .on_conflict_do_nothing(
            index_elements=[deliveries.c.provider, deliveries.c.hook_id, deliveries.c.delivery_id]
        )
        .returning(
            deliveries.c.id,
            deliveries.c.provider,
            deliveries.c.hook_id,
            deliveries.c.delivery_id,
        )
    )


def _delivery_row(item: Incoming) -> dict[str, object]:
    d = item.delivery
    return {
        "provider": d.provider,
        "hook_id": d.hook_id,
        "delivery_id": d.delivery_id,
        "event": d.event,
        "repo": d.repo,
        "received_at": d.received_at,
        "headers": json.dumps(dict(d.headers), sort_keys=True),
        "body": d.body,
        "outcome": "queued" if item.spec else "ignored",
        "reason": item.reason,
    }


def _unless_stale(conn: sa.Connection, items: Sequence[Incoming]) -> list[Incoming]:
    """`items`, with every stale push turned into an ignored delivery (its reason says why).

    Read in the writer's transaction, so no deploy recorded before it is missed; the
    history of a branch is read once per batch (a batch never deploys anything)."""
    histories: dict[tuple[str, str, str], BranchHistory] = {}
    checked = []
    for item in items:
        spec = item.spec
        if spec is None or spec.trigger not in GUARDED_TRIGGERS or spec.force:
            checked.append(item)
            continue
        branch = (spec.provider, spec.repo, spec.ref)
        if branch not in histories:
            histories[branch] = branch_history(conn, *branch)
        reason = histories[branch].stale_reason(spec.sha)
        checked.append(item if reason is None else Incoming(item.delivery, None, reason))
    return checked


def _supersede(conn: sa.Connection, fresh: Sequence[tuple[Incoming, int | None]]) -> None:
    """End the pull request builds each new delivery makes obsolete, in delivery order: a
    second head of the same request in one batch supersedes the first."""
    for item, build_id in fresh:
        ref = item.supersedes
        if ref is None:
            continue
        d = item.delivery
        if build_id is not None:
            reason = f"superseded by build #{build_id}, a newer head of the pull request"
        else:
            reason = "the pull request was closed"
        supersede_pull_builds(conn, d.provider, d.repo, ref, reason, before=build_id)


def record_deliveries(conn: sa.Connection, items: Sequence[Incoming]) -> list[Recorded]:
    """Store every delivery, and for each new one that builds, its build, its `received` and
    `queued` stage events and its job — a handful of statements for the whole batch.

    Runs in the caller's transaction. A delivery already stored (or twice in `items`) is
    answered as a duplicate and builds nothing; a stale push (trainhook/stale.py) is stored
    as ignored with its reason. Returns one Recorded per item, in order.
    """
    if not items:
        return []
    items = _unless_stale(conn, items)
    rows = conn.execute(_insert_deliveries(conn), [_delivery_row(i) for i in items]).all()
    new_ids = {(r.provider, r.hook_id, r.delivery_id): r.id for r in rows}
    fresh: list[tuple[int, Incoming, int]] = []  # (position, item, delivery row id)
    claimed: set[tuple[str, str, str]] = set()
    for pos, item in enumerate(items):
        if item.key in new_ids and item.key not in claimed:
            claimed.add(item.key)
            fresh.append((pos, item, new_ids[item.key]))
    building = [(pos, item, row) for pos, item, row in fresh if item.spec is not None]
    build_ids: dict[int, int] = {}
    if building:
        result = conn.execute(
            builds.insert().returning(builds.c.id, sort_by_parameter_order=True),
            [
                build_row(item.spec, row, item.delivery.received_at)
                for _, item, row in building
                if item.spec is not None
            ],
        )
        for (pos, _, _), build_id in zip(building, result.scalars().all(), strict=True):
            build_ids[pos] = build_id
        now = utcnow()
        events: list[dict[str, object]] = []
        job_rows = []
        for pos, item, _ in building:
            events += opening_events(build_ids[pos], item.delivery.received_at, now)
            job_rows.append(job_row(build_ids[pos], now))
        conn.execute(stage_events.insert(), events)
        conn.execute(jobs.insert(), job_rows)
    _supersede(conn, [(item, build_ids.get(pos)) for pos, item, _ in fresh])
    fresh_positions = {pos for pos, _, _ in fresh}
    answers = []
    for pos, item in enumerate(items):
        if pos in fresh_positions:
            answers.append(Recorded(build_ids.get(pos), False, item.reason))
            continue
        found = find_delivery(conn, *item.key)
        build_id = found[3] if found else None
        reason = (found[2] or found[1]) if found else item.reason
        answers.append(Recorded(build_id, True, reason))
    return answers

"""The SQL of live updates: what is new since a position (one query per poll) and what one
subscriber missed before it joined (one query per connection). Rows of three kinds share one
shape: `e` a stage event (with its build's repo, ref and current status), `l` a log chunk,
`b` a build's current status (`at` its finish time, `text` its error)."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from trainhook.buildview import branch_ref
from trainhook.models import builds, stage_events, stage_logs

EVENTS_PER_POLL = 500
LOGS_PER_POLL = 200
CATCH_UP_LIMIT = 5000


@dataclass(frozen=True, order=True)
class Position:
    """How far a reader got: the last stage event id and the last log row id it has seen."""

    event: int = 0
    log: int = 0

    def __str__(self) -> str:
        return f"{self.event}.{self.log}"

    @classmethod
    def parse(cls, raw: str | None) -> Position | None:
        """`"120.37"` (or `"120"`) -> Position; None when absent or malformed."""
        if not raw:
            return None
        head, _, tail = raw.strip().partition(".")
        parts = [head, tail or "0"]
        if not all(p.isascii() and p.isdigit() and len(p) <= 12 for p in parts):
            return None
        return cls(int(parts[0]), int(parts[1]))


@dataclass(frozen=True)
class Interest:
    """What one subscriber wants: a build (with its logs), or the rows of a list page."""

    build: int | None = None
    ids: frozenset[int] = frozenset()
    # The newest build on the list page (0: an empty page): newer ones matching the filters
    # are news. None: an older page, which never gains rows.
    top: int | None = None
    repo: str | None = None
    branch: str | None = None


def _null(type_: Any) -> Any:
    return sa.cast(sa.null(), type_)


def _kind(letter: str) -> Any:
    return sa.cast(sa.literal_column(f"'{letter}'"), sa.String(1)).label("kind")


def _events(where: Any, limit: int) -> sa.Select[Any]:
    e, b = stage_events.c, builds.c
    inner = (
        sa.select(
            _kind("e"),
            e.id,
            e.build_id,
            e.stage,
            e.status,
            e.at,
            e.cache,
            e.detail.label("text"),
            b.repo,
            b.ref,
        )
        .select_from(stage_events.join(builds, builds.c.id == e.build_id))
        .where(where)
        .order_by(e.id)
        .limit(limit)
        .subquery()
    )
    return sa.select(inner)


def _logs(where: Any, watched: Collection[int], limit: int) -> sa.Select[Any]:
    g = stage_logs.c
    # Every new log row is read (ids must stay contiguous to spot gaps), but its text only
    # for builds someone is watching: nobody pays for the logs of builds nobody looks at.
    text = (
        sa.case((g.build_id.in_(list(watched)), g.text), else_=_null(sa.Text)) if watched else None
    )
    inner = (
        sa.select(
            _kind("l"),
            g.id,
            g.build_id,
            g.stage,
            _null(sa.String(16)).label("status"),
            g.at,
            _null(sa.String(8)).label("cache"),
            (text if text is not None else _null(sa.Text)).label("text"),
            _null(sa.String(255)).label("repo"),
            _null(sa.String(255)).label("ref"),
        )
        .where(where)
        .order_by(g.id)
        .limit(limit)
        .subquery()
    )
    return sa.select(inner)


def _builds(where: Any) -> sa.Select[Any]:
    b = builds.c
    return sa.select(
        _kind("b"),
        b.id,
        b.id.label("build_id"),
        _null(sa.String(16)).label("stage"),
        b.status,
        b.finished_at.label("at"),
        _null(sa.String(8)).label("cache"),
        b.error.label("text"),
        b.repo,
        b.ref,
    ).where(where)


def poll(
    conn: sa.Connection, after: Position, active: Collection[int], watched: Collection[int]
) -> Sequence[Any]:
    """Everything new after `after` plus the status of `active` builds: one query."""
    parts = [
        _events(stage_events.c.id > after.event, EVENTS_PER_POLL),
        _logs(stage_logs.c.id > after.log, watched, LOGS_PER_POLL),
    ]
    if active:
        parts.append(_builds(builds.c.id.in_(list(active))))
    return conn.execute(sa.union_all(*parts)).all()


def head(conn: sa.Connection) -> Position:
    """The newest event and log ids: where a reader starting now begins."""
    row = conn.execute(
        sa.select(
            sa.select(sa.func.max(stage_events.c.id)).scalar_subquery(),
            sa.select(sa.func.max(stage_logs.c.id)).scalar_subquery(),
        )
    ).one()
    return Position(int(row[0] or 0), int(row[1] or 0))


def catch_up(
    conn: sa.Connection, interest: Interest, since: Position, upto: Position
) -> Sequence[Any]:
    """What `interest` missed between `since` and `upto` (where the poller took over), and
    the current status of its builds: one query."""
    e, g, b = stage_events.c, stage_logs.c, builds.c
    event_range = sa.and_(e.id > since.event, e.id <= upto.event)
    if interest.build is not None:
        return conn.execute(
            sa.union_all(
                _events(sa.and_(e.build_id == interest.build, event_range), CATCH_UP_LIMIT),
                _logs(
                    sa.and_(g.build_id == interest.build, g.id > since.log, g.id <= upto.log),
                    [interest.build],
                    CATCH_UP_LIMIT,
                ),
                _builds(b.id == interest.build),
            )
        ).all()
    parts = [_builds(b.id.in_(sorted(interest.ids)))]
    if interest.ids:
        parts.append(_events(sa.and_(e.build_id.in_(sorted(interest.ids)), event_range), 5000))
    if interest.top is not None:
        newer = sa.select(b.id).where(b.id > interest.top).order_by(b.id).limit(20)
        if interest.repo:
            newer = newer.where(b.repo == interest.repo)
        if interest.branch:
            newer = newer.where(b.ref == branch_ref(interest.branch))
        parts.append(_builds(b.id.in_(newer)))
    return conn.execute(sa.union_all(*parts)).all()

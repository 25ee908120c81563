"""The loop every background sender of the service runs in (commit statuses, pull request
comments, notifications): a daemon thread calling `tick()` every `interval` seconds until
stopped. A tick that raises (the database is down) is logged by name and retried after a
doubling wait, at most a minute, so an outage neither spins nor stops the sender."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any, Self

import sqlalchemy as sa

from trainhook.models import builds

log = logging.getLogger(__name__)

MAX_WAIT = 60.0
# How far back a sender starting afresh reads builds, and how long a build stays in view
# after it was created whatever its state (see `advanced_floor`).
HORIZON = timedelta(days=3)
RECENT = timedelta(minutes=10)
OPEN = ("queued", "running")


def watching(repos: Iterable[tuple[str, str]]) -> sa.ColumnElement[bool]:
    """The builds of the (provider, repository) pairs a sender serves."""
    return sa.or_(*(sa.and_(builds.c.provider == p, builds.c.repo == r) for p, r in repos))


def after_created_before(conn: sa.Connection, moment: datetime) -> int:
    """One past the newest build created before `moment`. Not one past the newest build:
    a build committing meanwhile, or later than a higher id, would then never be read (on
    PostgreSQL each statement reads its own snapshot and ids are taken before commit)."""
    last = conn.execute(
        sa.select(sa.func.coalesce(sa.func.max(builds.c.id), 0)).where(builds.c.created_at < moment)
    ).scalar_one()
    return int(last) + 1


def advanced_floor(
    conn: sa.Connection,
    floor: int,
    now: datetime,
    *,
    watched: sa.ColumnElement[bool],
    unsettled: sa.ColumnElement[bool],
    source: Any = builds,
) -> int:
    """The floor moved past builds finished and settled, never past one open, created in the
    last RECENT, or `unsettled` (still owed something); `source` is what `unsettled` reads."""
    held = conn.execute(
        sa.select(sa.func.min(builds.c.id))
        .select_from(source)
        .where(
            builds.c.id >= floor,
            sa.or_(
                sa.and_(watched, builds.c.status.in_(OPEN)),
                builds.c.created_at >= now - RECENT,
                unsettled,
            ),
        )
    ).scalar()
    settled = after_created_before(conn, now - RECENT)
    return max(floor, settled if held is None else min(int(held), settled))


class BackgroundSender:
    """Subclasses set `name` and `interval`, and define `tick()`, `enabled` (no thread is
    started when there is nothing to send) and `close()` (their HTTP clients)."""

    name = "background sender"
    interval: float

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def enabled(self) -> bool:
        return True

    def tick(self) -> object:
        """One pass over what is due (what it returns, a count say, is for tests)."""
        raise NotImplementedError

    def close(self) -> None:
        """Release what the sender holds (its HTTP client); called once the thread ended."""

    def start(self) -> Self:
        if self.enabled and self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name=self.name.replace(" ", "-"), daemon=True
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None
        self.close()

    def _run(self) -> None:
        failures = 0
        while not self._stop.is_set():
            try:
                self.tick()
                failures = 0
            except Exception as exc:  # the database is down: keep trying, quietly
                failures += 1
                log.warning("%s: tick failed (%s)", self.name, type(exc).__name__)
            self._stop.wait(min(self.interval * 2**failures, MAX_WAIT))

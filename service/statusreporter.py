"""The commit-status reporter: a background thread that tails builds and sends each change of
status to the forge, for every repository with a `forge_token_env` whose token is set.

It needs nothing from the worker. Each tick it reads, from a moving floor of build ids, the
builds whose status differs from the one `status_reports` says was last reported, claims each
row by lease (several service replicas may run a reporter), sends the status and records it.
A forge that is down, rate-limited (403/429 with Retry-After or X-RateLimit-Reset) or slow is
retried later with backoff; a permanent refusal (bad token, no access) or MAX_ATTEMPTS
failures give that status up (logged, kept in `status_reports.error`). None of this ever
touches the build.

Delivery is at least once: a crash between the forge's answer and the recorded report sends
that status once more after the restart (harmless: the same state again). Intermediate
states a build passed through between two ticks are not sent, only where it is now.

The floor starts after the last build created before the last HORIZON (a restart after a
long outage reports that far back, no further) and moves past builds that are finished and
reported, but never past a build created in the last RECENT minutes, seen or not. A build
still being committed is such a build: on PostgreSQL each statement reads its own snapshot
and ids are taken before commit, so a build may appear between two of the reporter's reads,
or after a higher id. Placing the floor only after builds old enough that none of them can
still be committing makes both harmless.
"""

from __future__ import annotations

import logging
import os
import secrets
from collections.abc import Callable
from datetime import datetime, timedelta

import httpx
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine

from service.background import (
    HORIZON,
    BackgroundSender,
    advanced_floor,
    after_created_before,
    watching,
)
from service.forges import ApiError, ForgeApi
from service.forges.api import client
from service.forges.registry import connect
from service.forges.statuses import report_for
from trainhook.db import reading
from trainhook.models import builds, status_reports, utcnow
from trainhook.settings import Settings

log = logging.getLogger(__name__)

LEASE = timedelta(seconds=60)
MAX_ATTEMPTS = 8
BATCH = 100


def backoff(attempt: int) -> float:
    """Seconds before retry `attempt` when the forge did not say: 5, 10, 20 … ≤ 600."""
    return float(min(600, 5 * 2 ** max(0, attempt - 1)))


class StatusReporter(BackgroundSender):
    """Reports build statuses to forges; `tick()` once, or `start()` a thread doing it."""

    name = "status reporter"

    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        *,
        interval: float = 1.0,
        http: httpx.Client | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.settings, self.engine, self.interval, self.clock = settings, engine, interval, clock
        self.apis: dict[tuple[str, str], ForgeApi] = {}
        for repo in settings.repos:
            api = connect(repo, settings.forge_token(repo))
            if api is not None:
                self.apis[(repo.provider, repo.name)] = api
            elif repo.forge_token_env:
                unset = not settings.forge_token(repo)
                why = "is not set" if unset else "is set, but the forge API URL is unknown"
                log.warning("%s: %s %s: no commit statuses",
                            repo.name, repo.forge_token_env, why)  # fmt: skip
        self._http = http
        self.owner = f"{os.getpid()}-{secrets.token_hex(4)}"
        self.floor: int | None = None
        BackgroundSender.__init__(self)

    @property
    def enabled(self) -> bool:
        return bool(self.apis)

    @property
    def http(self) -> httpx.Client:
        if self._http is None:
            self._http = client()
        return self._http

    def close(self) -> None:
        if self._http is not None:
            self._http.close()

    def _watched(self) -> sa.ColumnElement[bool]:
        return watching(self.apis)

    def _pending(self) -> sa.ColumnElement[bool]:
        return sa.and_(
            self._watched(),
            builds.c.sha != "",
            sa.or_(status_reports.c.status.is_(None), status_reports.c.status != builds.c.status),
        )

    def tick(self) -> int:
        """Send what is due; returns how many statuses the forges accepted."""
        if not self.enabled:
            return 0
        now = self.clock()
        with reading(self.engine) as conn:
            if self.floor is None:
                self.floor = after_created_before(conn, now - HORIZON)
            rows = conn.execute(
                sa.select(builds, status_reports.c.attempts.label("report_attempts"),
                          status_reports.c.next_attempt_at, status_reports.c.claimed_until)
                .select_from(builds.outerjoin(status_reports))
                .where(builds.c.id >= self.floor, self._pending())
                .order_by(builds.c.id)
                .limit(BATCH)
            ).all()  # fmt: skip
        sent = 0
        for row in rows:
            due = row.next_attempt_at is None or row.next_attempt_at <= now
            free = row.claimed_until is None or row.claimed_until <= now
            if due and free and self._claim(row.id, now):
                sent += self._report(row, now)
        with reading(self.engine) as conn:
            self.floor = self._advance(conn, self.floor, now)
        return sent

    def _advance(self, conn: sa.Connection, floor: int, now: datetime) -> int:
        return advanced_floor(
            conn, floor, now, watched=self._watched(), unsettled=self._pending(),
            source=builds.outerjoin(status_reports),
        )  # fmt: skip

    def _claim(self, build_id: int, now: datetime) -> bool:
        until = now + LEASE
        with self.engine.begin() as conn:
            dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
            inserted = conn.execute(
                dialect.insert(status_reports)
                .values(build_id=build_id, attempts=0, claimed_by=self.owner,
                        claimed_until=until, updated_at=now)
                .on_conflict_do_nothing(index_elements=[status_reports.c.build_id])
                .returning(status_reports.c.build_id)
            ).first()  # fmt: skip
            if inserted is not None:
                return True
            taken = conn.execute(
                status_reports.update()
                .where(
                    status_reports.c.build_id == build_id,
                    sa.or_(status_reports.c.claimed_until.is_(None),
                           status_reports.c.claimed_until <= now),
                    sa.or_(status_reports.c.next_attempt_at.is_(None),
                           status_reports.c.next_attempt_at <= now),
                )
                .values(claimed_by=self.owner, claimed_until=until)
            )  # fmt: skip
            return taken.rowcount == 1

    def _settle(self, build_id: int, **values: object) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                status_reports.update()
                .where(status_reports.c.build_id == build_id,
                       status_reports.c.claimed_by == self.owner)
                .values(claimed_by=None, claimed_until=None, updated_at=self.clock(), **values)
            )  # fmt: skip

    def _report(self, row: sa.Row[object], now: datetime) -> int:
        api = self.apis[(row.provider, row.repo)]
        with reading(self.engine) as conn:
            # The build as it is now, under our claim: the batch was read before the sends
            # that came first, and another replica may have reported a newer status since.
            # Sending the batch's status then would move the forge's status back.
            current = conn.execute(
                sa.select(builds)
                .select_from(builds.outerjoin(status_reports))
                .where(builds.c.id == row.id, self._pending())
            ).first()
            public_url = self.settings.public_url
            report = report_for(conn, api.forge, current, public_url) if current else None
        if report is None:
            self._settle(row.id)  # reported meanwhile: nothing to send
            return 0
        try:
            api.forge.send_status(self.http, api, report)
        except ApiError as exc:
            attempts = (row.report_attempts or 0) + 1
            if exc.retry_after is None or attempts >= MAX_ATTEMPTS:
                log.warning("build %d: status %s given up: %s", row.id, report.state, exc)
                self._settle(row.id, status=report.status, attempts=attempts,
                             next_attempt_at=None, error=f"gave up: {exc}")  # fmt: skip
            else:
                delay = max(exc.retry_after, backoff(attempts))
                log.info(
                    "build %d: status %s retried in %.0fs: %s", row.id, report.state, delay, exc
                )
                self._settle(row.id, attempts=attempts, error=str(exc),
                             next_attempt_at=now + timedelta(seconds=delay))  # fmt: skip
            return 0
        self._settle(row.id, status=report.status, state=report.state, attempts=0,
                     next_attempt_at=None, error=None)  # fmt: skip
        log.debug("build %d: status %s sent to %s", row.id, report.state, api.provider)
        return 1

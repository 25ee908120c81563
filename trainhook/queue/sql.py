"""The embedded queue: jobs in a SQL table, claimed by lease."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from trainhook.models import jobs, utcnow
from trainhook.queue import Job


def runnable(now: datetime) -> sa.ColumnElement[bool]:
    """Jobs a worker may take: queued and due, or running under an expired lease."""
    return sa.or_(
        sa.and_(jobs.c.status == "queued", jobs.c.available_at <= now),
        sa.and_(jobs.c.status == "running", jobs.c.lease_until < now),
    )


def claim_row(
    conn: sa.Connection,
    owner: str,
    lease: timedelta,
    *,
    build_id: int | None = None,
    **also: object,
) -> Job | None:
    """Claim the oldest runnable job (or the job of `build_id`) in the caller's transaction,
    setting the columns in `also` too.

    One guarded UPDATE on SQLite (whose writers are serialised) and `FOR UPDATE SKIP LOCKED`
    on Postgres (so claimers never wait on each other). For one given build the row lock is
    waited for instead (its holders are short: another claimer, the outbox marking it
    published), then the guard is checked again. Returns None when nothing was taken.
    """
    now = utcnow()
    candidate = sa.select(jobs.c.id).where(runnable(now)).order_by(jobs.c.id)
    if build_id is not None:
        candidate = candidate.where(jobs.c.build_id == build_id)
    if conn.dialect.name == "postgresql":
        locked = candidate.limit(1).with_for_update(skip_locked=build_id is None)
        picked = conn.execute(locked).scalar()
        if picked is None:
            return None
        where = jobs.c.id == picked
    else:
        where = jobs.c.id == candidate.limit(1).scalar_subquery()
    row = conn.execute(
        jobs.update()
        .where(where, runnable(now))
        .values(
            status="running",
            lease_owner=owner,
            lease_until=now + lease,
            attempts=jobs.c.attempts + 1,
            **also,
        )
        .returning(jobs.c.id, jobs.c.build_id, jobs.c.attempts)
    ).first()
    if row is None:
        return None
    return Job(id=row.id, build_id=row.build_id, attempts=row.attempts, owner=owner)


class SqlQueue:
    """Jobs in the `jobs` table. Claim is one guarded UPDATE on SQLite (whose writers are
    serialised) and `FOR UPDATE SKIP LOCKED` on Postgres (so claimers never wait on each other)."""

    def __init__(self, engine: Engine, lease_seconds: float = 60.0) -> None:
        self.engine = engine
        self.lease = timedelta(seconds=lease_seconds)
        self._wakeup = threading.Event()

    def notify(self, build_ids: list[int]) -> None:
        self._wakeup.set()

    def wait(self, timeout: float) -> None:
        self._wakeup.wait(timeout)
        self._wakeup.clear()

    def claim(self, owner: str) -> Job | None:
        with self.engine.begin() as conn:
            return claim_row(conn, owner, self.lease)

    def _mine(self, job: Job) -> sa.ColumnElement[bool]:
        return sa.and_(
            jobs.c.id == job.id, jobs.c.lease_owner == job.owner, jobs.c.status == "running"
        )

    def _settle(self, job: Job, **values: object) -> bool:
        """Update the job while `job.owner` holds it; False when the lease was lost."""
        with self.engine.begin() as conn:
            result = conn.execute(jobs.update().where(self._mine(job)).values(**values))
        return result.rowcount == 1

    def heartbeat(self, job: Job) -> bool:
        return self._settle(job, lease_until=utcnow() + self.lease)

    def complete(self, job: Job) -> None:
        self._settle(job, status="done", lease_until=None)

    def release(
        self, job: Job, *, delay: float = 0.0, error: str | None = None, counted: bool = True
    ) -> None:
        self._settle(
            job,
            status="queued",
            attempts=jobs.c.attempts if counted else jobs.c.attempts - 1,
            lease_owner=None,
            lease_until=None,
            available_at=utcnow() + timedelta(seconds=delay),
            last_error=error,
        )
        self._wakeup.set()

    def bury(self, job: Job, error: str) -> None:
        # published_at: no dead-letter message is owed (were the queue switched to Pub/Sub,
        # its outbox would otherwise copy every old dead job to the dead-letter topic).
        self._settle(job, status="dead", lease_until=None, last_error=error, published_at=utcnow())

    def start_background(self) -> None:
        """Nothing runs beside the claims: a worker polls the table."""

    def close(self) -> None:
        """Nothing to stop: the engine belongs to the runtime."""

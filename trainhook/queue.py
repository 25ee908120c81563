"""The job queue seam and its embedded implementation, a SQL table claimed by lease."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import timedelta
from typing import Protocol

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from trainhook.models import jobs, utcnow


@dataclass(frozen=True)
class Job:
    """A claimed job: the build to run, which attempt this is, and who holds the lease."""

    id: int
    build_id: int
    attempts: int
    owner: str


class Queue(Protocol):
    """Where builds wait for a worker. Every method is safe to call from several processes."""

    def notify(self, build_ids: list[int]) -> None:
        """Tell consumers that these builds' job rows were committed. Never raises: a lost
        notification only delays a job, which a poll or a sweeper still finds."""

    def claim(self, owner: str) -> Job | None:
        """Take the next runnable job under a lease held by `owner`, or None when there is
        none. A job whose lease expired is runnable again. Two callers never get one job."""

    def heartbeat(self, job: Job) -> bool:
        """Extend the lease; False when it was lost (another worker may now run the job)."""

    def complete(self, job: Job) -> None:
        """Finish the job for good. Idempotent; a lost lease makes it a no-op."""

    def release(self, job: Job, *, delay: float = 0.0, error: str | None = None) -> None:
        """Give the job back to be claimed again after `delay` seconds (retry or shutdown)."""

    def bury(self, job: Job, error: str) -> None:
        """Move the job to the dead-letter list; it is never claimed again."""

    def wait(self, timeout: float) -> None:
        """Block up to `timeout` seconds or until `notify` is called in this process."""


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

    def _runnable(self, now: sa.ColumnElement[object] | object) -> sa.ColumnElement[bool]:
        return sa.or_(
            sa.and_(jobs.c.status == "queued", jobs.c.available_at <= now),
            sa.and_(jobs.c.status == "running", jobs.c.lease_until < now),
        )

    def claim(self, owner: str) -> Job | None:
        now = utcnow()
        with self.engine.begin() as conn:
            candidate = sa.select(jobs.c.id).where(self._runnable(now)).order_by(jobs.c.id)
            if conn.dialect.name == "postgresql":
                job_id = conn.execute(candidate.limit(1).with_for_update(skip_locked=True))
                picked = job_id.scalar()
                if picked is None:
                    return None
                where = jobs.c.id == picked
            else:
                where = jobs.c.id == candidate.limit(1).scalar_subquery()
            row = conn.execute(
                jobs.update()
                .where(where, self._runnable(now))
                .values(
                    status="running",
                    lease_owner=owner,
                    lease_until=now + self.lease,
                    attempts=jobs.c.attempts + 1,
                )
                .returning(jobs.c.id, jobs.c.build_id, jobs.c.attempts)
            ).first()
        if row is None:
            return None
        return Job(id=row.id, build_id=row.build_id, attempts=row.attempts, owner=owner)

    def _mine(self, job: Job) -> sa.ColumnElement[bool]:
        return sa.and_(
            jobs.c.id == job.id, jobs.c.lease_owner == job.owner, jobs.c.status == "running"
        )

    def heartbeat(self, job: Job) -> bool:
        with self.engine.begin() as conn:
            result = conn.execute(
                jobs.update().where(self._mine(job)).values(lease_until=utcnow() + self.lease)
            )
        return result.rowcount == 1

    def complete(self, job: Job) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                jobs.update().where(self._mine(job)).values(status="done", lease_until=None)
            )

    def release(self, job: Job, *, delay: float = 0.0, error: str | None = None) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                jobs.update()
                .where(self._mine(job))
                .values(
                    status="queued",
                    lease_owner=None,
                    lease_until=None,
                    available_at=utcnow() + timedelta(seconds=delay),
                    last_error=error,
                )
            )
        self._wakeup.set()

    def bury(self, job: Job, error: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                jobs.update()
                .where(self._mine(job))
                .values(status="dead", lease_until=None, last_error=error)
            )

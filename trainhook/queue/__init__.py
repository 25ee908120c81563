"""The job queue seam: where builds wait for a worker.

`Queue` is the contract every transport keeps (tests/queue/test_contract.py runs it over each):
`sql` (the embedded default, a table claimed by lease) and `pubsub` (jobs announced on a topic
through the transactional `outbox`, then claimed in SQL like the default). `admin` creates
and seeks the Pub/Sub resources; `deadletters` lists, requeues and reconciles dead jobs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True)
class Job:
    """A claimed job: the build to run, which attempt this is, and who holds the lease.
    `receipt` is the transport's handle on the message that delivered it (a Pub/Sub ack id),
    None for the SQL queue."""

    id: int
    build_id: int
    attempts: int
    owner: str
    receipt: str | None = field(default=None, compare=False, repr=False)


class Queue(Protocol):
    """Where builds wait for a worker. Every method is safe to call from several processes
    and threads; the database row of the job is the system of record."""

    def notify(self, build_ids: list[int]) -> None:
        """Tell consumers that these builds' job rows were committed. Returns at once and
        never raises: a lost notification only delays a job, which a poll or a sweeper still
        finds. Idempotent (notifying twice costs at most a duplicate message)."""

    def claim(self, owner: str) -> Job | None:
        """Take the next runnable job under a lease held by `owner`; returns it, or None when
        there is none (now, or within the transport's poll time). A job whose lease expired is
        runnable again. Two callers never get one job. Raises when the database or the
        transport is unreachable (the caller waits and tries again)."""

    def heartbeat(self, job: Job) -> bool:
        """Extend the lease; returns False when it was lost (another worker may now run the
        job). May raise on a transient outage (the caller retries within the lease)."""

    def complete(self, job: Job) -> None:
        """Finish the job for good. Idempotent; a lost lease makes it a no-op. May raise when
        the database is unreachable (the lease then expires and a redelivery finds the build
        finished)."""

    def release(
        self, job: Job, *, delay: float = 0.0, error: str | None = None, counted: bool = True
    ) -> None:
        """Give the job back to be claimed again after `delay` seconds (retry or shutdown).
        `counted=False` gives the attempt back too (a graceful stop is no failure, so rolling
        restarts never use up TRAINHOOK_MAX_ATTEMPTS). A no-op when the lease was lost. May
        raise like `complete`."""

    def bury(self, job: Job, error: str) -> None:
        """Move the job to the dead-letter list; it is never claimed again. A no-op when the
        lease was lost. May raise like `complete`."""

    def wait(self, timeout: float) -> None:
        """Block up to `timeout` seconds or until `notify` is called in this process.
        Never raises."""

    def start_background(self) -> None:
        """Start what a serving process runs beside requests (Pub/Sub: the outbox sweep and
        the dead-letter reconciliation). Idempotent."""

    def close(self) -> None:
        """Finish and stop the background work (Pub/Sub: publish what was notified, then
        close the clients). The engine is not the queue's to dispose of."""

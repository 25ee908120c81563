"""The Pub/Sub queue (TRAINHOOK_QUEUE=pubsub): jobs announced on a topic, claimed in SQL.

Delivery is at least once. The database stays the system of record: a pulled message only
says "look at build N"; the worker then claims that build's job row with the same lease as
the SQL queue. A message for a job that is finished (done, dead) is acked without work. A
message for a job another worker holds under a live lease is nacked until that lease ends,
not acked: it may be the redelivery of a worker that died (Pub/Sub's ack deadline and the
database lease are two clocks), and acking it would leave nobody to retry the job.

Pub/Sub may lose its resources (deleted by hand; an emulator restarted, all in memory): a
NOT_FOUND on publish or pull makes the process create what is missing, as `setup-pubsub`
does, and a subscription made anew gets every unfinished job published again (see
`trainhook.queue.outbox.owe_messages`).

google-cloud-pubsub is imported only here, and only when this queue is configured.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import replace
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from trainhook.models import jobs, utcnow
from trainhook.queue import Job
from trainhook.queue.admin import setup_pubsub
from trainhook.queue.deadletters import reconcile
from trainhook.queue.outbox import Relay, owe_messages
from trainhook.queue.pubsubclients import PubSubClients
from trainhook.queue.sql import SqlQueue, claim_row
from trainhook.settings import Settings

log = logging.getLogger(__name__)

MAX_DEADLINE = 600  # seconds: the longest ack deadline Pub/Sub accepts
RPC_TIMEOUT = 10.0
RECREATE_SECONDS = 5.0  # the least time between two attempts to recreate missing resources


def ack_seconds(seconds: float) -> int:
    """`seconds` as an ack deadline Pub/Sub accepts (0-600, whole seconds)."""
    return int(min(MAX_DEADLINE, max(0, math.ceil(seconds))))


class PubSubQueue(SqlQueue):
    """The Queue protocol over Pub/Sub plus the jobs table (leases, attempts, dead state)."""

    def __init__(
        self, engine: Engine, settings: Settings, clients: PubSubClients | None = None
    ) -> None:
        super().__init__(engine, lease_seconds=settings.lease_seconds)
        self.settings = settings
        self.clients = clients or PubSubClients.from_settings(settings)
        self.relay = Relay(
            engine,
            self.clients.publisher,
            self.clients.topic,
            self.clients.dead_topic,
            publish_timeout=settings.pubsub_publish_timeout,
            sweep_seconds=settings.pubsub_sweep_seconds,
            republish_seconds=settings.pubsub_republish_seconds,
            on_failure=self._recreate_if_missing,
        )
        self.pull_seconds = max(2.0, settings.pubsub_pull_seconds)
        # Held messages are kept a second past the lease, so after a crash the redelivery
        # usually finds the lease already expired and claims the job at once.
        self.ack_extension = ack_seconds(max(10.0, settings.lease_seconds + 1))
        self._closing = threading.Event()
        self._watcher: threading.Thread | None = None
        self._recreate_lock = threading.Lock()
        self._recreated_at = -math.inf

    def _recreate_if_missing(self, exc: BaseException) -> None:
        from google.api_core import exceptions as gexc

        if isinstance(exc, gexc.NotFound):
            self.recreate()

    def recreate(self) -> bool:
        """Pub/Sub answered NOT_FOUND: create the topics and subscriptions that are missing
        (idempotent, as `trainhook setup-pubsub`). When the jobs subscription had to be
        made, none of the earlier messages exists any more: every unfinished job is marked
        unpublished for the outbox sweep (a duplicate is harmless, a lost job is not).
        Returns whether anything was created; at most one try per RECREATE_SECONDS per
        process (every worker sees the same NOT_FOUND at once). Never raises."""
        with self._recreate_lock:
            if time.monotonic() - self._recreated_at < RECREATE_SECONDS:
                return False
            self._recreated_at = time.monotonic()
            try:
                made = [
                    r for r in setup_pubsub(self.settings, self.clients) if r.state == "created"
                ]
            except Exception as exc:  # Pub/Sub still away, or no permission: next NOT_FOUND
                log.warning("pubsub: could not recreate resources: %s: %s", type(exc).__name__, exc)
                return False
        for resource in made:
            log.warning("pubsub: %s %s was missing: created it", resource.kind, resource.path)
        if any(r.path == self.clients.subscription for r in made):
            # In a thread: the database may be away too (it is retried until it is back).
            threading.Thread(target=self._owe_all, name="owe-messages", daemon=True).start()
        return bool(made)

    def _owe_all(self, tries: int = 300, pause: float = 1.0) -> None:
        """Mark every unfinished job unpublished (the subscription is new), retrying while
        the database is unreachable; after `tries` the stale-job republish is left to it."""
        for _ in range(tries):
            try:
                owed = owe_messages(self.engine)
            except Exception as exc:
                log.warning("pubsub: jobs not marked for republishing yet: %s", exc)
                if self._closing.wait(pause):
                    return
            else:
                log.warning("pubsub: new subscription: %d unfinished job(s) published again", owed)
                return

    def notify(self, build_ids: list[int]) -> None:
        self.relay.submit(build_ids)

    def start_background(self) -> None:
        """Run the outbox sweep, and in a thread of its own (its pull waits) the dead-letter
        reconciliation, every TRAINHOOK_PUBSUB_SWEEP_SECONDS. Idempotent."""
        self.relay.start(sweep=True)
        if self._watcher is None:
            self._watcher = threading.Thread(
                target=self._watch_dead_letters, name="dead-letters", daemon=True
            )
            self._watcher.start()

    def _watch_dead_letters(self) -> None:
        while not self._closing.wait(self.settings.pubsub_sweep_seconds):
            try:
                reconcile(self.engine, self.clients, self.settings)
            except Exception as exc:  # Pub/Sub or the database away: next round
                log.warning("dead-letter check failed: %s: %s", type(exc).__name__, exc)
                self._recreate_if_missing(exc)  # the dead-letter subscription may be gone

    def wait(self, timeout: float) -> None:
        # claim() already waited in its pull; just yield a moment.
        self._wakeup.wait(min(timeout, 0.1))
        self._wakeup.clear()

    def claim(self, owner: str) -> Job | None:
        deadline = time.monotonic() + self.pull_seconds
        while True:
            message = self._pull(max(2.0, deadline - time.monotonic()))
            if message is None:
                return None
            job = self._take(message, owner)
            if job is not None or time.monotonic() >= deadline:
                return job

    def _pull(self, timeout: float) -> Any | None:
        from google.api_core import exceptions as gexc

        try:
            response = self.clients.subscriber.pull(
                request={"subscription": self.clients.subscription, "max_messages": 1},
                timeout=timeout,
                retry=None,
            )
        except gexc.DeadlineExceeded:
            return None
        except gexc.NotFound:
            if not self.recreate():
                raise  # recreated moments ago (or it failed): the worker waits, then pulls again
            return None
        received = response.received_messages
        return received[0] if received else None

    def _take(self, received: Any, owner: str) -> Job | None:
        """Claim the job a message names, or settle the message and return None."""
        ack_id, message = received.ack_id, received.message
        try:
            build_id = int(message.attributes["build_id"])
        except (KeyError, ValueError):
            log.error("message %s names no build: dropped", message.message_id)
            self._ack(ack_id)
            return None
        try:
            with self.engine.begin() as conn:
                # A delivered message proves the publish, whatever the relay could record.
                published = sa.func.coalesce(jobs.c.published_at, utcnow())
                job = claim_row(conn, owner, self.lease, build_id=build_id, published_at=published)
                state = None
                if job is None:
                    state = conn.execute(
                        sa.select(jobs.c.status, jobs.c.lease_until, jobs.c.available_at).where(
                            jobs.c.build_id == build_id
                        )
                    ).first()
        except Exception:
            self._modify(ack_id, 5)  # the database is down: let it come back soon
            raise
        if job is not None:
            self._modify(ack_id, self.ack_extension)
            return replace(job, receipt=ack_id)
        delay, why = self._not_now(state, utcnow())
        log.info("build %d: message %s %s", build_id, message.message_id, why)
        if delay is None:
            self._ack(ack_id)
        else:
            self._modify(ack_id, delay)
        return None

    def _not_now(self, state: Any, now: datetime) -> tuple[float | None, str]:
        """(None, why) to ack a message whose job needs no work, or (delay, why) to nack."""
        if state is None:
            return None, "names no job in this database: acked"
        if state.status in ("done", "dead"):
            return None, f"is for a {state.status} job: acked without work"
        if state.status == "queued" and state.available_at > now:
            wait = (state.available_at - now).total_seconds()
            return wait, f"came early (retry backoff): nacked for {wait:.0f}s"
        if state.status == "running" and state.lease_until and state.lease_until >= now:
            wait = (state.lease_until - now).total_seconds() + 1
            return wait, f"is for a job held by another worker: nacked for {wait:.0f}s"
        return 1.0, "raced another claimer: nacked for 1s"

    def heartbeat(self, job: Job) -> bool:
        held = super().heartbeat(job)
        if held:
            self._modify(job.receipt, self.ack_extension)
        return held

    def complete(self, job: Job) -> None:
        if self._settle(job, status="done", lease_until=None) or self._status(job) == "done":
            self._ack(job.receipt)
        # Otherwise the lease was lost: the message is left to its deadline, and the
        # worker that holds the job now settles it.

    def release(
        self, job: Job, *, delay: float = 0.0, error: str | None = None, counted: bool = True
    ) -> None:
        super().release(job, delay=delay, error=error, counted=counted)
        self._modify(job.receipt, delay)  # a nack: redelivered after `delay`, 0 = now

    def bury(self, job: Job, error: str) -> None:
        if self._settle(job, status="dead", lease_until=None, last_error=error, published_at=None):
            # The outbox copies it to the dead-letter topic (now, or at the next sweep).
            try:
                self.relay.publish([job.build_id])
            except Exception as exc:
                log.warning("build %d: dead letter left to the sweeper: %s", job.build_id, exc)
            self._ack(job.receipt)

    def _status(self, job: Job) -> str | None:
        with self.engine.connect() as conn:
            return conn.execute(sa.select(jobs.c.status).where(jobs.c.id == job.id)).scalar()

    def _ack(self, ack_id: str | None) -> None:
        if ack_id:
            self._call("acknowledge", {"ack_ids": [ack_id]})

    def _modify(self, ack_id: str | None, seconds: float) -> None:
        if ack_id:
            request = {"ack_ids": [ack_id], "ack_deadline_seconds": ack_seconds(seconds)}
            self._call("modify_ack_deadline", request)

    def _call(self, method: str, request: dict[str, Any]) -> None:
        """Best effort: the database already says what happened; a lost ack only means a
        redelivery, which the claim turns into a no-op."""
        try:
            getattr(self.clients.subscriber, method)(
                request={"subscription": self.clients.subscription, **request},
                timeout=RPC_TIMEOUT,
            )
        except Exception as exc:
            log.warning("pubsub %s failed (a redelivery will follow): %s", method, exc)

    def close(self) -> None:
        """Publish what was notified, then close the clients."""
        self._closing.set()
        self.relay.stop()
        if self._watcher is not None:
            self._watcher.join(timeout=10)
        self.clients.close()

"""The transactional outbox of the Pub/Sub queue: job rows committed with their build are
published after the commit, and marked published (`jobs.published_at`) once Pub/Sub has them.

The webhook transaction only writes rows. `Relay.submit` (called through `queue.notify` after
the commit) hands build ids to a background thread and returns at once; the thread publishes
them. A sweep, every `sweep_seconds` in the service and in `trainhook up`, publishes whatever
is left: a relay killed after the commit, Pub/Sub down when the webhook came. A relay killed
after publishing but before marking makes the sweep publish again: a duplicate message, which
the consumer's database claim makes harmless. Dead jobs go the same way to the dead-letter topic.

A published message can still be lost (the subscription deleted and made again, an emulator
restarted with its state in memory). `owe_messages` then marks unfinished jobs unpublished so
the sweep publishes them again: all of them when the subscription is known to be new, and at
every sweep those runnable for `republish_seconds` with nobody claiming them.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from trainhook.models import builds, jobs, utcnow

log = logging.getLogger(__name__)

BATCH = 500
MAX_ATTRIBUTE = 1000  # Pub/Sub caps attribute values at 1024 bytes


def ordering_key(repo: str, ref: str) -> str:
    """Messages of one repository and branch are delivered in order."""
    return f"{repo}:{ref}"


@dataclass
class PublishResult:
    published: list[int] = field(default_factory=list)  # build ids marked published
    failed: list[int] = field(default_factory=list)  # build ids left for the sweeper

    @property
    def ok(self) -> bool:
        return not self.failed


class Relay:
    """Publishes unpublished job rows. `publisher` is a google-cloud-pubsub PublisherClient
    created with message ordering enabled; `topic`/`dead_topic` are full topic paths."""

    def __init__(
        self,
        engine: Engine,
        publisher: Any,
        topic: str,
        dead_topic: str,
        *,
        publish_timeout: float = 10.0,
        sweep_seconds: float = 10.0,
        grace_seconds: float = 2.0,
        republish_seconds: float = 0.0,
        on_failure: Callable[[BaseException], None] | None = None,
    ) -> None:
        self.engine = engine
        self.publisher = publisher
        self.topic = topic
        self.dead_topic = dead_topic
        self.publish_timeout = publish_timeout
        self.sweep_seconds = sweep_seconds
        self.grace = timedelta(seconds=grace_seconds)
        # 0: never republish a job whose message was delivered once (see owe_messages).
        self.republish = timedelta(seconds=republish_seconds) if republish_seconds > 0 else None
        # Told of each failed publish (the queue recreates a missing topic from it).
        self.on_failure = on_failure
        self._ids: queue.SimpleQueue[list[int] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._sweeping = False
        self._lock = threading.Lock()

    # -- background thread -------------------------------------------------------------

    def submit(self, build_ids: Iterable[int]) -> None:
        """Publish these builds' jobs soon, in the background. Never blocks, never raises."""
        ids = [int(b) for b in build_ids]
        if ids:
            self._ids.put(ids)
            self.start()

    def start(self, *, sweep: bool = False) -> Relay:
        """Start the background thread (idempotent); `sweep` also sweeps periodically."""
        with self._lock:
            self._sweeping = self._sweeping or sweep
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="outbox-relay", daemon=True)
                self._thread.start()
        return self

    def stop(self, timeout: float = 15.0) -> None:
        """Publish what was submitted (within `timeout`), then end the thread."""
        thread = self._thread
        if thread is not None and thread.is_alive():
            self._ids.put(None)
            thread.join(timeout)

    def _run(self) -> None:
        next_sweep = time.monotonic()
        healthy = True
        while True:
            wait = max(0.0, next_sweep - time.monotonic()) if self._sweeping else None
            try:
                first = self._ids.get(timeout=wait)
            except queue.Empty:
                first = []
            stopping = first is None
            ids = list(first or [])
            while True:  # take everything waiting: one batch
                try:
                    more = self._ids.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stopping = True
                else:
                    ids.extend(more)
            # While Pub/Sub is down, leave new rows to the next sweep instead of waiting
            # out a publish timeout per notification (the rows are safe in the database).
            if ids and (healthy or not self._sweeping or stopping):
                healthy = self._guarded("publish", functools.partial(self.publish, ids))
            if self._sweeping and time.monotonic() >= next_sweep and not stopping:
                healthy = self._guarded("sweep", self.sweep)
                next_sweep = time.monotonic() + self.sweep_seconds
            if stopping:
                return

    @staticmethod
    def _guarded(what: str, fn: Callable[[], object]) -> bool:
        try:
            result = fn()
        except Exception as exc:  # the thread must survive a database or Pub/Sub outage
            log.warning("outbox: %s failed: %s: %s", what, type(exc).__name__, exc)
            return False
        return not isinstance(result, PublishResult) or result.ok

    # -- publishing ---------------------------------------------------------------------

    def sweep(self) -> PublishResult:
        """Publish every unpublished job older than the grace period (so rows whose own
        notification is in flight are left to it), after marking unpublished the jobs whose
        message looks lost. Returns what was published."""
        if self.republish is not None:
            owed = owe_messages(self.engine, idle_for=self.republish)
            if owed:
                log.warning(
                    "outbox: %d job(s) runnable for %.0fs with nobody claiming them: their "
                    "message is taken as lost and published again",
                    owed,
                    self.republish.total_seconds(),
                )
        total = PublishResult()
        while True:
            result = self.publish(None)
            total.published += result.published
            total.failed += result.failed
            if not result.ok or len(result.published) < BATCH:
                if total.published:
                    log.info("outbox sweep published %d job(s)", len(total.published))
                return total

    def publish(self, build_ids: list[int] | None) -> PublishResult:
        """Publish the unpublished jobs of `build_ids` (all due ones when None) and mark
        them published. Raises only when the database is unreachable."""
        rows = self._pending(build_ids)
        result = PublishResult()
        if not rows:
            return result
        futures = []
        for row in rows:
            topic, key, data, attrs = self._message(row)
            try:
                future = self.publisher.publish(topic, data, ordering_key=key, **attrs)
                futures.append((row, topic, key, future))
            except Exception as exc:  # a paused ordering key raises here
                self._failed(row, topic, key, exc, result)
        deadline = time.monotonic() + self.publish_timeout + 1.0
        for row, topic, key, future in futures:
            try:
                future.result(timeout=max(0.1, deadline - time.monotonic()))
            except TimeoutError as exc:
                # Still in flight: if it lands after all, mark it then (else the sweeper
                # publishes it again, a harmless duplicate).
                future.add_done_callback(functools.partial(self._landed, row.build_id))
                self._failed(row, topic, key, exc, result)
            except Exception as exc:
                self._failed(row, topic, key, exc, result)
            else:
                result.published.append(row.build_id)
        if result.published:
            self._mark_published(result.published)
        return result

    def _landed(self, build_id: int, future: Any) -> None:
        if future.exception() is None:
            with contextlib.suppress(Exception):
                self._mark_published([build_id])

    def _failed(self, row: Any, topic: str, key: str, exc: Exception, out: PublishResult) -> None:
        out.failed.append(row.build_id)
        if self.on_failure is not None:
            try:
                self.on_failure(exc)
            except Exception as hook_exc:  # the rows stay owed whatever the hook does
                log.warning("outbox: failure hook failed: %s", hook_exc)
        if key:
            # With ordering keys, one failed publish pauses the key until resumed. (A publish
            # we stopped waiting for may still be in flight: then the key is not paused.)
            with contextlib.suppress(RuntimeError):
                self.publisher.resume_publish(topic, key)
        log.warning(
            "outbox: build %d not published yet (%s); the sweeper retries",
            row.build_id,
            type(exc).__name__,
        )

    def _pending(self, build_ids: list[int] | None) -> list[Any]:
        now = utcnow()
        query = (
            sa.select(
                jobs.c.build_id,
                jobs.c.status,
                jobs.c.attempts,
                jobs.c.last_error,
                builds.c.repo,
                builds.c.ref,
                builds.c.sha,
            )
            .join(builds, builds.c.id == jobs.c.build_id)
            .where(
                jobs.c.published_at.is_(None),
                sa.or_(
                    jobs.c.status.in_(("queued", "dead")),
                    sa.and_(jobs.c.status == "running", jobs.c.lease_until < now),
                ),
            )
            .order_by(jobs.c.id)
            .limit(BATCH)
        )
        if build_ids is not None:
            query = query.where(jobs.c.build_id.in_(build_ids))
        else:
            query = query.where(jobs.c.available_at <= now - self.grace)
        with self.engine.connect() as conn:
            return list(conn.execute(query))

    def _message(self, row: Any) -> tuple[str, str, bytes, dict[str, str]]:
        dead = row.status == "dead"
        attempt = row.attempts if dead else row.attempts + 1
        body = {"build_id": row.build_id, "attempt": attempt, "repo": row.repo, "ref": row.ref}
        attrs = {"build_id": str(row.build_id), "attempt": str(attempt)}
        if dead:
            attrs["reason"] = (row.last_error or "")[:MAX_ATTRIBUTE]
            return self.dead_topic, "", json.dumps(body).encode(), attrs
        key = ordering_key(row.repo, row.ref)
        return self.topic, key, json.dumps(body).encode(), attrs

    def _mark_published(self, build_ids: list[int]) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                jobs.update()
                .where(jobs.c.build_id.in_(build_ids), jobs.c.published_at.is_(None))
                .values(published_at=utcnow())
            )


def owe_messages(engine: Engine, *, idle_for: timedelta | None = None) -> int:
    """Mark unfinished jobs' messages as owed again (`published_at` NULL), so the sweep
    publishes them; returns how many. Without `idle_for`: every queued or running job (the
    subscription is new, so none of their messages exists; a running job's is published once
    its lease has expired, if its worker never finishes it). With `idle_for`: only jobs that
    have been runnable that long (queued and due, or running under a lease expired that long
    ago) and not published within it, i.e. whose message nobody took: Pub/Sub redelivers an
    unacknowledged message well within a lease, so a message missing for longer is lost.
    A message that was only slow gives a duplicate, which the claim makes harmless."""
    where = sa.and_(jobs.c.published_at.is_not(None), jobs.c.status.in_(("queued", "running")))
    if idle_for is not None:
        since = utcnow() - idle_for
        where = sa.and_(
            where,
            jobs.c.published_at < since,
            sa.or_(
                sa.and_(jobs.c.status == "queued", jobs.c.available_at < since),
                sa.and_(jobs.c.status == "running", jobs.c.lease_until < since),
            ),
        )
    with engine.begin() as conn:
        return int(conn.execute(jobs.update().where(where).values(published_at=None)).rowcount)


def unpublished(engine: Engine, build_ids: list[int]) -> list[int]:
    """Those of `build_ids` whose job the relay has not published yet."""
    query = sa.select(jobs.c.build_id).where(
        jobs.c.build_id.in_(build_ids), jobs.c.published_at.is_(None)
    )
    with engine.connect() as conn:
        return sorted(conn.execute(query).scalars())

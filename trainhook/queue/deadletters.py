"""Dead jobs: listing them, requeueing one as a new attempt, and reconciling the database
with what Pub/Sub dead-lettered on its own.

The worker buries a job after TRAINHOOK_MAX_ATTEMPTS failed attempts: it fails the build
(with the reason, on the status page), marks the job `dead` and the outbox copies it to the
dead-letter topic. Pub/Sub's own dead-letter policy (TRAINHOOK_PUBSUB_MAX_DELIVERIES) is the
backstop for a job that never gets that far (say it kills every worker that takes it):
`reconcile` then finds the message on the dead-letter subscription and records it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from trainhook.audit import Actor, cli_actor, write
from trainhook.builds import BuildSpec, create_build, mark_finished
from trainhook.errors import TrainhookError
from trainhook.models import builds, jobs, utcnow
from trainhook.settings import Settings

if TYPE_CHECKING:
    from trainhook.queue import Queue
    from trainhook.queue.pubsubclients import PubSubClients

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DeadJob:
    build_id: int
    repo: str
    ref: str
    sha: str
    attempts: int
    error: str | None
    created_at: datetime
    requeued_as: int | None  # the newest build made from it by `--requeue` or replay

    def line(self) -> str:
        again = f"; requeued as build {self.requeued_as}" if self.requeued_as else ""
        return (
            f"build {self.build_id} {self.repo} {self.ref} {self.sha[:12]} "
            f"after {self.attempts} attempt(s): {self.error or '-'}{again}"
        )


def list_dead(engine: Engine, limit: int = 200) -> list[DeadJob]:
    """Dead jobs, newest first (the database is the list; the topic is a copy)."""
    later = builds.alias("later")
    again = (
        sa.select(sa.func.max(later.c.id))
        .where(later.c.replay_of == jobs.c.build_id)
        .correlate(jobs)
    )
    query = (
        sa.select(
            jobs.c.build_id,
            builds.c.repo,
            builds.c.ref,
            builds.c.sha,
            jobs.c.attempts,
            jobs.c.last_error,
            builds.c.created_at,
            again.scalar_subquery().label("again"),
        )
        .join(builds, builds.c.id == jobs.c.build_id)
        .where(jobs.c.status == "dead")
        .order_by(jobs.c.build_id.desc())
        .limit(limit)
    )
    with engine.connect() as conn:
        return [DeadJob(*row) for row in conn.execute(query)]


def requeue(engine: Engine, queue: Queue, build_id: int, actor: Actor | None = None) -> int:
    """Queue a new attempt of a dead job: a new `replay` build of the same commit, published
    through the outbox. Returns the new build id; raises TrainhookError when the build has
    no dead job. Audited in the same transaction as done by `actor` (default: the user
    running the command, from this host)."""
    with engine.begin() as conn:
        row = conn.execute(
            sa.select(builds, jobs.c.status.label("job_status"))
            .join(jobs, jobs.c.build_id == builds.c.id)
            .where(builds.c.id == build_id)
        ).first()
        if row is None:
            raise TrainhookError(f"build {build_id} has no job")
        if row.job_status != "dead":
            raise TrainhookError(
                f"build {build_id} is not dead-lettered (its job is {row.job_status}); "
                "use `trainhook replay` for finished builds"
            )
        spec = BuildSpec(
            provider=row.provider, repo=row.repo, ref=row.ref, sha=row.sha,
            before_sha=row.before_sha, trigger="replay", force=row.force,
            commit_message=row.commit_message, author=row.author, replay_of=row.id,
        )  # fmt: skip
        new_id = create_build(conn, spec)
        detail = f"dead-letter requeue of build {build_id}"
        write(conn, actor or cli_actor(), "requeue", build_id=build_id, result_build_id=new_id,
              detail=detail)  # fmt: skip
    queue.notify([new_id])
    return new_id


def reconcile(engine: Engine, clients: PubSubClients, settings: Settings) -> list[str]:
    """Read the dead-letter subscription and make the database agree; ack what was read.
    Returns one line per message saying what was done."""
    from google.api_core import exceptions as gexc

    try:
        response = clients.subscriber.pull(
            request={"subscription": clients.dead_subscription, "max_messages": 100},
            timeout=3.0,
            retry=None,
        )
    except gexc.DeadlineExceeded:
        return []
    done, lines = [], []
    for received in response.received_messages:
        attrs = received.message.attributes
        try:
            lines.append(_settle_dead(engine, int(attrs["build_id"]), attrs, settings))
        except (KeyError, ValueError):
            lines.append(f"message {received.message.message_id}: names no build, dropped")
        done.append(received.ack_id)
    if done:
        clients.subscriber.acknowledge(
            request={"subscription": clients.dead_subscription, "ack_ids": done}, timeout=10.0
        )
    for line in lines:
        log.info("dead letters: %s", line)
    return lines


def _settle_dead(engine: Engine, build_id: int, attrs: Any, settings: Settings) -> str:
    now = utcnow()
    deliveries = attrs.get("CloudPubSubDeadLetterSourceDeliveryCount", "?")
    with engine.begin() as conn:
        job = conn.execute(sa.select(jobs).where(jobs.c.build_id == build_id)).first()
        if job is None or job.status in ("done", "dead"):
            return f"build {build_id}: job {job.status if job else 'missing'}, nothing to do"
        if job.status == "running" and job.lease_until and job.lease_until >= now:
            return f"build {build_id}: a duplicate; another worker holds the job"
        if job.attempts < settings.max_attempts:
            # Dead-lettered while it still had attempts left (nacked too often): publish again.
            conn.execute(
                jobs.update()
                .where(jobs.c.id == job.id)
                .values(status="queued", published_at=None, lease_owner=None, available_at=now)
            )
            return f"build {build_id}: dead-lettered after {deliveries} deliveries, republished"
        reason = (
            f"dead-lettered by Pub/Sub after {deliveries} deliveries and {job.attempts} "
            f"attempt(s){': ' + job.last_error if job.last_error else ''}"
        )
        conn.execute(
            jobs.update()
            .where(jobs.c.id == job.id)
            .values(status="dead", lease_until=None, last_error=reason, published_at=now)
        )
        mark_finished(conn, build_id, "failed", reason)
    return f"build {build_id}: {reason}; build failed"

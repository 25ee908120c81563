"""Pub/Sub resources: `trainhook setup-pubsub` (idempotent), `trainhook snapshot NAME` and the
seek behind `trainhook replay --seek`; the buckets' notifications of data changes."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from trainhook.errors import TrainhookError
from trainhook.models import jobs
from trainhook.queue.pubsubclients import PubSubClients
from trainhook.settings import Settings

RETENTION = timedelta(days=7)  # the longest a subscription keeps acked messages for seek


@dataclass(frozen=True)
class Resource:
    kind: str  # topic | subscription
    path: str
    state: str  # created | exists | "exists, but ..."

    def line(self) -> str:
        return f"{self.kind:<12} {self.path}: {self.state}"


def subscription_spec(settings: Settings, clients: PubSubClients) -> dict[str, Any]:
    """The jobs subscription: ordered per repository+branch, acked messages retained (so
    replay can seek), a dead-letter policy as the backstop for jobs that kill workers, and
    no expiry. No retry policy: a nack with deadline 0 (shutdown) must redeliver at once."""
    return {
        "name": clients.subscription,
        "topic": clients.topic,
        "ack_deadline_seconds": int(min(600, max(10, settings.lease_seconds))),
        "retain_acked_messages": True,
        "message_retention_duration": RETENTION,
        "enable_message_ordering": True,
        "dead_letter_policy": {
            "dead_letter_topic": clients.dead_topic,
            "max_delivery_attempts": settings.pubsub_max_deliveries,
        },
        "expiration_policy": {},  # never expires
    }


def setup_pubsub(settings: Settings, clients: PubSubClients) -> list[Resource]:
    """Create the topic, the subscription, the dead-letter topic and its subscription.
    Idempotent: what exists is left as it is (and reported when it differs)."""
    from google.api_core import exceptions as gexc

    def create(kind: str, path: str, call: Any, request: dict[str, Any]) -> Resource:
        try:
            call(request=request)
        except gexc.AlreadyExists:
            return Resource(kind, path, "exists")
        return Resource(kind, path, "created")

    pub, sub = clients.publisher, clients.subscriber
    done = [
        create("topic", clients.topic, pub.create_topic, {"name": clients.topic}),
        create("topic", clients.dead_topic, pub.create_topic, {"name": clients.dead_topic}),
    ]
    spec = subscription_spec(settings, clients)
    made = create("subscription", clients.subscription, sub.create_subscription, spec)
    if made.state == "exists":
        made = Resource(made.kind, made.path, _drift(sub, spec))
    done.append(made)
    dead = {
        "name": clients.dead_subscription,
        "topic": clients.dead_topic,
        "ack_deadline_seconds": 60,
        "retain_acked_messages": True,
        "message_retention_duration": RETENTION,
        "expiration_policy": {},
    }
    done.append(create("subscription", clients.dead_subscription, sub.create_subscription, dead))
    return done


def data_paths(settings: Settings, clients: PubSubClients) -> tuple[str, str]:
    """(topic, subscription) paths of the data events (trainhook/dataevents.py)."""
    project = settings.pubsub_project
    return (
        clients.publisher.topic_path(project, settings.pubsub_data_topic),
        clients.subscriber.subscription_path(project, settings.pubsub_data_subscription),
    )


def setup_data_events(
    settings: Settings, clients: PubSubClients, storage: Any | None
) -> list[Resource]:
    """For repositories whose `data` names gs:// objects: the data topic, the subscription
    the service pulls from, and per watched object a bucket notification (OBJECT_FINALIZE,
    JSON_API_V1, the object's name as prefix) publishing to that topic. Nothing when no
    repository watches an object. Idempotent: a notification with the same topic, prefix
    and event type is left as it is. `storage` is a google-cloud-storage Client (None: made
    here, for the project of TRAINHOOK_GCP_PROJECT or the Pub/Sub project)."""
    from google.api_core import exceptions as gexc

    from trainhook.dataevents import FINALIZE, watched_objects
    from trainhook.gcs import make_gcs_client

    watched = watched_objects(settings.repos)
    if not watched:
        return []
    topic, subscription = data_paths(settings, clients)
    done = []
    try:
        clients.publisher.create_topic(request={"name": topic})
        done.append(Resource("topic", topic, "created"))
    except gexc.AlreadyExists:
        done.append(Resource("topic", topic, "exists"))
    spec = {
        "name": subscription,
        "topic": topic,
        # Long enough for a tick to commit every build of a pulled batch before the ack.
        "ack_deadline_seconds": 60,
        "expiration_policy": {},  # never expires
    }
    try:
        clients.subscriber.create_subscription(request=spec)
        done.append(Resource("subscription", subscription, "created"))
    except gexc.AlreadyExists:
        done.append(Resource("subscription", subscription, "exists"))
    storage = storage if storage is not None else make_gcs_client(settings.gcp_project)
    project = settings.pubsub_project
    for bucket_name, name in sorted(watched):
        bucket = storage.bucket(bucket_name)
        where = f"gs://{bucket_name}/{name}"
        existing = [
            n
            for n in bucket.list_notifications()
            if n.topic_project == project
            and n.topic_name == settings.pubsub_data_topic
            and (n.blob_name_prefix or "") == name
            and (not n.event_types or FINALIZE in n.event_types)  # none listed: all events
        ]
        if existing:
            done.append(Resource("notification", where, "exists"))
            continue
        bucket.notification(
            topic_name=settings.pubsub_data_topic,
            topic_project=project,
            event_types=[FINALIZE],
            blob_name_prefix=name,
            payload_format="JSON_API_V1",
        ).create()
        done.append(Resource("notification", where, "created"))
    return done


def _drift(subscriber: Any, spec: dict[str, Any]) -> str:
    have = subscriber.get_subscription(request={"subscription": spec["name"]})
    wrong = []
    if have.topic != spec["topic"]:
        wrong.append(f"topic is {have.topic}")
    if not have.enable_message_ordering:
        wrong.append("message ordering is off (fixed at creation: recreate it)")
    if not have.retain_acked_messages:
        wrong.append("acked messages are not retained (replay --seek cannot go back)")
    if have.dead_letter_policy.dead_letter_topic != spec["dead_letter_policy"]["dead_letter_topic"]:
        wrong.append("no dead-letter policy to the dead-letter topic")
    return "exists" if not wrong else "exists, but " + "; ".join(wrong)


def create_snapshot(clients: PubSubClients, name: str) -> str:
    """Snapshot the jobs subscription's acknowledgement state as `name`; returns its path."""
    from google.api_core import exceptions as gexc

    path = clients.subscriber.snapshot_path(_project(clients), name)
    try:
        clients.subscriber.create_snapshot(
            request={"name": path, "subscription": clients.subscription}
        )
    except gexc.AlreadyExists:
        raise TrainhookError(f"snapshot {name!r} exists; pick another name") from None
    except gexc.NotFound:
        raise TrainhookError(f"{clients.subscription} not found: run setup-pubsub") from None
    return str(path)


def seek(
    clients: PubSubClients, *, to_time: datetime | None = None, snapshot: str | None = None
) -> str:
    """Seek the jobs subscription to a time or a snapshot: Pub/Sub marks every retained
    message published after it unacked and delivers it again. Returns what was done."""
    from google.api_core import exceptions as gexc

    if (to_time is None) == (snapshot is None):
        raise TrainhookError("seek needs a time (--since) or a snapshot (--snapshot), not both")
    request: dict[str, Any] = {"subscription": clients.subscription}
    if snapshot is not None:
        request["snapshot"] = clients.subscriber.snapshot_path(_project(clients), snapshot)
    else:
        request["time"] = to_time
    try:
        clients.subscriber.seek(request=request)
    except gexc.NotFound as exc:
        raise TrainhookError(f"seek failed: {exc.message}") from None
    except gexc.MethodNotImplemented:
        # The emulator cannot seek an ordered subscription to a time (Pub/Sub itself can).
        raise TrainhookError(
            "this Pub/Sub cannot seek the subscription to a time; take snapshots with "
            "`trainhook snapshot NAME` and use `replay --seek --snapshot NAME`"
        ) from None
    target = f"snapshot {snapshot}" if snapshot else f"{to_time:%Y-%m-%dT%H:%M:%SZ}"
    return f"seeked {clients.subscription} to {target}"


def published_since(engine: Engine, since: datetime) -> dict[str, int]:
    """Jobs whose message was published at or after `since`, by job status: what a seek to
    `since` will redeliver, and how the consumers will take it."""
    query = (
        sa.select(jobs.c.status, sa.func.count())
        .where(jobs.c.published_at >= since)
        .group_by(jobs.c.status)
    )
    with engine.connect() as conn:
        return {status: int(count) for status, count in conn.execute(query)}


def _project(clients: PubSubClients) -> str:
    return clients.subscription.split("/")[1]

"""The data watcher: pulls the buckets' object notifications from the data subscription
(`trainhook setup-pubsub` makes it) and queues a `data` build for each new generation of a
watched gs:// object (trainhook/dataevents.py decides, and dedupes in SQL).

Every replica runs it on the same subscription; Pub/Sub hands each message to one of them,
and a message delivered twice (to two replicas, or again after a lost ack) finds its
`data_events` row and queues nothing. A message is acknowledged only after its builds (or
the decision that nothing watches its object) are committed: a crash or a database outage
before that leaves it unacked, and Pub/Sub delivers it again after the ack deadline.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa

from service.background import BackgroundSender
from trainhook.dataevents import BadEvent, Taken, parse_event, take_event, watched_objects
from trainhook.settings import Settings

log = logging.getLogger(__name__)

BATCH = 100  # messages per pull: an upload storm is taken a hundred events a transaction each


class DataWatcher(BackgroundSender):
    name = "data watcher"
    interval = 0.2  # a pull itself waits up to TRAINHOOK_PUBSUB_PULL_SECONDS for messages

    def __init__(
        self,
        settings: Settings,
        engine: sa.Engine,
        notify: Callable[[list[int]], object] | None = None,
        subscriber: Any | None = None,
    ) -> None:
        super().__init__()
        self.settings = settings
        self.engine = engine
        self.notify = notify  # the queue's wake-up for new jobs
        self._subscriber = subscriber
        self._own_subscriber = subscriber is None

    @property
    def enabled(self) -> bool:
        """On when a repository trains on a gs:// object and a Pub/Sub project is known."""
        return bool(self.settings.pubsub_project) and bool(watched_objects(self.settings.repos))

    @property
    def subscriber(self) -> Any:
        if self._subscriber is None:
            import google.cloud.pubsub_v1 as pubsub_v1

            self._subscriber = pubsub_v1.SubscriberClient()
        return self._subscriber

    @property
    def subscription(self) -> str:
        return str(
            self.subscriber.subscription_path(
                self.settings.pubsub_project, self.settings.pubsub_data_subscription
            )
        )

    def tick(self) -> list[Taken]:
        """Pull one batch, take each event, then acknowledge what was committed."""
        from google.api_core import exceptions as gexc

        try:
            response = self.subscriber.pull(
                request={"subscription": self.subscription, "max_messages": BATCH},
                timeout=self.settings.pubsub_pull_seconds,
                retry=None,
            )
        except gexc.DeadlineExceeded:
            return []  # nothing arrived within the wait
        except gexc.NotFound:
            log.warning("%s does not exist: run `trainhook setup-pubsub`", self.subscription)
            raise  # the loop waits longer after each failed tick
        taken: list[Taken] = []
        done: list[str] = []
        try:
            for received in response.received_messages:
                try:
                    event = parse_event(received.message.attributes)
                except BadEvent as exc:
                    # Never readable, so never worth a redelivery: acknowledged and logged.
                    log.warning("data: message %s ignored: %s", received.message.message_id, exc)
                else:
                    taken.extend(take_event(self.engine, self.settings.repos, event))
                done.append(received.ack_id)
        finally:
            # What committed is acknowledged even when a later event failed (the database
            # went away): that one, and the rest of the batch, are delivered again.
            if done:
                self.subscriber.acknowledge(
                    request={"subscription": self.subscription, "ack_ids": done}
                )
            # The rest is handed back at once rather than after the ack deadline: the next
            # tick (after the loop's wait) or another replica takes it again.
            left = [r.ack_id for r in response.received_messages if r.ack_id not in done]
            if left:
                self.subscriber.modify_ack_deadline(
                    request={
                        "subscription": self.subscription,
                        "ack_ids": left,
                        "ack_deadline_seconds": 0,
                    }
                )
            queued = [t.build_id for t in taken if t.outcome == "queued" and t.build_id]
            if queued and self.notify is not None:
                self.notify(queued)
        return taken

    def close(self) -> None:
        if self._own_subscriber and self._subscriber is not None:
            self._subscriber.close()
            self._subscriber = None

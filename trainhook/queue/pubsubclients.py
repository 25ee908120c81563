"""The Pub/Sub clients and resource paths one process uses, built from Settings.

A module of its own so that the queue, `admin` and `deadletters` share it without importing
each other; google-cloud-pubsub is imported only when the clients are made.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from trainhook.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class PubSubClients:
    """The two Google clients and the full resource paths, built from Settings.
    `PUBSUB_EMULATOR_HOST` is honoured by the clients themselves."""

    publisher: Any
    subscriber: Any
    topic: str
    subscription: str
    dead_topic: str
    dead_subscription: str

    @classmethod
    def from_settings(cls, settings: Settings) -> PubSubClients:
        import google.cloud.pubsub_v1 as pubsub_v1
        from google.api_core import exceptions as gexc
        from google.api_core.retry import Retry, if_exception_type

        transient = if_exception_type(
            gexc.Aborted,
            gexc.DeadlineExceeded,
            gexc.InternalServerError,
            gexc.ResourceExhausted,
            gexc.ServiceUnavailable,
            gexc.Unknown,
        )
        timeout = settings.pubsub_publish_timeout
        publisher = pubsub_v1.PublisherClient(
            batch_settings=pubsub_v1.types.BatchSettings(max_latency=0.005, max_messages=100),
            publisher_options=pubsub_v1.types.PublisherOptions(
                enable_message_ordering=True,
                retry=Retry(predicate=transient, initial=0.1, maximum=2.0, timeout=timeout),
                timeout=min(timeout, 5.0),
            ),
        )
        subscriber = pubsub_v1.SubscriberClient()
        project = settings.pubsub_project
        return cls(
            publisher=publisher,
            subscriber=subscriber,
            topic=publisher.topic_path(project, settings.pubsub_topic),
            subscription=subscriber.subscription_path(project, settings.pubsub_subscription),
            dead_topic=publisher.topic_path(project, settings.dead_letter_topic),
            dead_subscription=subscriber.subscription_path(
                project, settings.dead_letter_subscription
            ),
        )

    def close(self) -> None:
        for close in (self.publisher.stop, self.subscriber.close):
            try:
                close()
            except Exception as exc:  # closing twice, or a transport already gone
                log.debug("closing a Pub/Sub client: %s", exc)

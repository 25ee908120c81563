"""Wiring: the objects a process needs, built from Settings in one place (never at import)."""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy.engine import Engine

from trainhook.db import make_engine
from trainhook.metrics import Metrics
from trainhook.queue import Queue
from trainhook.queue.sql import SqlQueue
from trainhook.settings import Settings


@dataclass
class Runtime:
    """Settings plus the engine, queue and metrics built from them."""

    settings: Settings
    engine: Engine
    queue: Queue
    metrics: Metrics = field(default_factory=Metrics)

    def start_background(self) -> None:
        """Start what a serving process runs beside requests: with Pub/Sub, the outbox
        sweeper (publishes jobs left unpublished; records Pub/Sub's dead letters)."""
        self.queue.start_background()

    def close(self) -> None:
        """Flush and stop the queue's background work, then release the engine."""
        self.queue.close()
        self.engine.dispose()


def build_runtime(settings: Settings, engine: Engine | None = None) -> Runtime:
    """Create the runtime for `settings`; `engine` may be given (tests share one)."""
    engine = engine or make_engine(settings.database_url)
    queue: Queue
    if settings.queue == "pubsub":
        from trainhook.queue.pubsub import PubSubQueue  # google-cloud-pubsub: only when configured

        queue = PubSubQueue(engine, settings)
    else:
        queue = SqlQueue(engine, lease_seconds=settings.lease_seconds)
    return Runtime(settings=settings, engine=engine, queue=queue)

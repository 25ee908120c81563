"""Wiring: the objects a process needs, built from Settings in one place (never at import)."""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy.engine import Engine

from trainhook.db import make_engine
from trainhook.metrics import Metrics
from trainhook.queue import Queue, SqlQueue
from trainhook.settings import Settings


@dataclass
class Runtime:
    """Settings plus the engine, queue and metrics built from them."""

    settings: Settings
    engine: Engine
    queue: Queue
    metrics: Metrics = field(default_factory=Metrics)

    def close(self) -> None:
        self.engine.dispose()


def build_runtime(settings: Settings, engine: Engine | None = None) -> Runtime:
    """Create the runtime for `settings`; `engine` may be given (tests share one)."""
    engine = engine or make_engine(settings.database_url)
    if settings.queue == "pubsub":
        raise NotImplementedError("TRAINHOOK_QUEUE=pubsub is not available yet")
    queue = SqlQueue(engine, lease_seconds=settings.lease_seconds)
    return Runtime(settings=settings, engine=engine, queue=queue)

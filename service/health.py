"""GET /healthz, /readyz and /metrics: probes for the orchestrator and the scraper."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import TypeVar

import anyio
import sqlalchemy as sa
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy.engine import Engine
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from service.api import STATUSES
from trainhook.db import reading
from trainhook.metrics import QueueCollector
from trainhook.models import builds
from trainhook.runtime import Runtime

log = logging.getLogger(__name__)
T = TypeVar("T")

# A probe must answer before the kubelet gives up on it, even when the database hangs.
DB_TIMEOUT = 2.0


def _ping(engine: Engine) -> None:
    with reading(engine) as conn:
        conn.execute(sa.text("SELECT 1"))


def count_by_status(engine: Engine) -> dict[str, int]:
    """Builds per status, in one GROUP BY query."""
    with reading(engine) as conn:
        rows = conn.execute(
            sa.select(builds.c.status, sa.func.count()).group_by(builds.c.status)
        ).all()
    return {status: int(n) for status, n in rows}


async def _with_timeout(fn: Callable[[Engine], T], engine: Engine) -> T:
    """Run a blocking DB call off the event loop; the answer never waits longer than DB_TIMEOUT."""
    with anyio.fail_after(DB_TIMEOUT):
        # Abandoned on timeout: a hung driver call would otherwise hold the answer until it ends.
        return await anyio.to_thread.run_sync(fn, engine, abandon_on_cancel=True)


async def healthz(request: Request) -> Response:
    # Liveness only: restarting the process would not fix a database outage.
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    runtime: Runtime = request.app.state.runtime
    try:
        await _with_timeout(_ping, runtime.engine)
    except Exception as exc:
        # The error text may hold the host or user; the client only learns the DB is down.
        log.warning("readiness check failed: %s", type(exc).__name__)
        return JSONResponse(
            {"status": "unavailable", "reason": "database unreachable"}, status_code=503
        )
    return JSONResponse({"status": "ok"})


class _BuildsCollector(Collector):
    """Figures read at scrape time, so every replica reports the shared database's truth."""

    def __init__(self, counts: dict[str, int] | None) -> None:
        self.counts = counts

    def collect(self) -> Iterator[GaugeMetricFamily]:
        up = GaugeMetricFamily(
            "trainhook_database_up", "1 when the builds could be counted at this scrape."
        )
        up.add_metric([], 0 if self.counts is None else 1)
        yield up
        if self.counts is None:
            return
        gauge = GaugeMetricFamily(
            "trainhook_builds", "Builds in the database by current status.", labels=["status"]
        )
        # Every known status is always present, so a series never vanishes when it reaches 0.
        for status in (*STATUSES, *sorted(set(self.counts) - set(STATUSES))):
            gauge.add_metric([status], self.counts.get(status, 0))
        yield gauge


async def metrics(request: Request) -> Response:
    runtime: Runtime = request.app.state.runtime
    counts: dict[str, int] | None
    try:
        counts = await _with_timeout(count_by_status, runtime.engine)
    except Exception as exc:
        log.warning("could not count builds for /metrics: %s", type(exc).__name__)
        counts = None
    # A registry per scrape: the runtime's own registry is never mutated by scraping.
    scrape = CollectorRegistry(auto_describe=False)
    scrape.register(_BuildsCollector(counts))
    # The queue figures (depth, oldest job age) are read from the database by the
    # collector: off the event loop, like the counts above.
    queue = CollectorRegistry(auto_describe=False)
    queue.register(QueueCollector(runtime.engine))
    try:
        queue_text = await _with_timeout(lambda _engine: generate_latest(queue), runtime.engine)
    except Exception as exc:
        log.warning("could not read the queue for /metrics: %s", type(exc).__name__)
        queue_text = b""
    body = generate_latest(runtime.metrics.registry) + generate_latest(scrape) + queue_text
    return Response(body, media_type=CONTENT_TYPE_LATEST)


routes = [
    Route("/healthz", healthz, methods=["GET"]),
    Route("/readyz", readyz, methods=["GET"]),
    Route("/metrics", metrics, methods=["GET"]),
]

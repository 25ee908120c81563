"""Prometheus metrics, in a registry per runtime (so tests and processes never share state).

Names follow Prometheus conventions: a unit suffix (`_seconds`), `_total` on counters. The
service and each worker serve their own registry; the figures read from the database (queue
depth, oldest job age) are collected at scrape time, so every process reports the same truth.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime

import sqlalchemy as sa
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy.engine import Engine

from trainhook.db import reading
from trainhook.models import jobs

# Every job status is always reported, so a series never vanishes when it reaches 0.
JOB_STATUSES = ("queued", "running", "done", "dead")


class Metrics:
    """The counters and histograms the service and the worker update."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.webhooks = Counter(
            "trainhook_webhooks_total",
            "Webhook deliveries answered, by provider and outcome.",
            ["provider", "outcome"],
            registry=self.registry,
        )
        self.webhook_seconds = Histogram(
            "trainhook_webhook_duration_seconds",
            "Time to verify, record and queue a delivery.",
            ["provider"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
            registry=self.registry,
        )
        self.builds = Counter(
            "trainhook_builds_finished_total",
            "Builds that reached a terminal status.",
            ["status"],
            registry=self.registry,
        )
        self.stage_seconds = Histogram(
            "trainhook_stage_duration_seconds",
            "Duration of pipeline stages, by stage and final status.",
            ["stage", "status"],
            buckets=(0.01, 0.05, 0.1, 0.5, 1, 2, 5, 10, 30, 60, 300, 1800),
            registry=self.registry,
        )
        self.cache = Counter(
            "trainhook_cache_decisions_total",
            "Cache decisions by level and result.",
            ["level", "result"],
            registry=self.registry,
        )


def queue_figures(engine: Engine) -> tuple[dict[str, int], float]:
    """Jobs per status, and the age in seconds of the oldest job waiting to be claimed
    (queued and available now; 0 when none waits). One GROUP BY query."""
    now = datetime.now(UTC)
    waiting = sa.and_(jobs.c.status == "queued", jobs.c.available_at <= now)
    oldest_created = sa.func.min(sa.case((waiting, jobs.c.created_at)))
    with reading(engine) as conn:
        rows = conn.execute(
            sa.select(jobs.c.status, sa.func.count(), oldest_created).group_by(jobs.c.status)
        ).all()
    counts = {str(status): int(n) for status, n, _ in rows}
    ages = [_age(now, first) for _, _, first in rows if first is not None]
    return counts, max(ages, default=0.0)


def _age(now: datetime, value: object) -> float:
    """Seconds since `value`: a datetime, or the text SQLite returns from an aggregate
    (which bypasses the column's type); naive values are UTC, as stored."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if not isinstance(value, datetime):
        return 0.0
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return max(0.0, (now - value).total_seconds())


class QueueCollector(Collector):
    """`trainhook_queue_jobs{status}` and `trainhook_queue_oldest_job_age_seconds`, read
    from the jobs table at each scrape (the jobs row is the truth for both queues), plus
    `trainhook_queue_scrape_ok` (0 when the database did not answer)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def collect(self) -> Iterator[GaugeMetricFamily]:
        started = time.monotonic()
        try:
            counts, age = queue_figures(self.engine)
        except Exception:
            # A scrape must answer even when the database does not: say so as a figure.
            counts, age = None, 0.0
        ok = GaugeMetricFamily(
            "trainhook_queue_scrape_ok", "1 when the queue figures could be read at this scrape."
        )
        ok.add_metric([], 0 if counts is None else 1)
        yield ok
        if counts is None:
            return
        depth = GaugeMetricFamily(
            "trainhook_queue_jobs", "Jobs in the queue by status.", labels=["status"]
        )
        for status in (*JOB_STATUSES, *sorted(set(counts) - set(JOB_STATUSES))):
            depth.add_metric([status], counts.get(status, 0))
        yield depth
        oldest = GaugeMetricFamily(
            "trainhook_queue_oldest_job_age_seconds",
            "Age of the oldest job waiting to be claimed (0 when none waits).",
        )
        oldest.add_metric([], age)
        yield oldest
        took = GaugeMetricFamily(
            "trainhook_queue_scrape_duration_seconds", "Time to read the queue figures."
        )
        took.add_metric([], time.monotonic() - started)
        yield took

"""Prometheus metrics, in a registry per runtime (so tests and processes never share state)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram


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
            "trainhook_webhook_seconds",
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
            "trainhook_stage_seconds",
            "Duration of pipeline stages.",
            ["stage", "status"],
            buckets=(0.01, 0.05, 0.1, 0.5, 1, 2, 5, 10, 30, 60, 300, 1800),
            registry=self.registry,
        )
        self.cache = Counter(
            "trainhook_cache_total",
            "Cache decisions by level and result.",
            ["level", "result"],
            registry=self.registry,
        )

"""GET /healthz, /readyz and /metrics: liveness, readiness on the DB, gauges read at scrape."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

from service.app import create_app
from tests.service.test_api import DOWN_PASSWORD, broken_engine, count_selects, make_build
from trainhook.runtime import Runtime, build_runtime
from trainhook.settings import Settings


@pytest.fixture
def down(db_url: str, tmp_path: Path, make_settings: Callable[..., Settings]) -> TestClient:
    """A client whose database cannot be reached (same kind as `db_url`)."""
    runtime = build_runtime(make_settings(db_url), broken_engine(db_url, tmp_path))
    return TestClient(create_app(runtime))


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """{(sample name, sorted labels): value} of a Prometheus text exposition."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def builds_gauge(text: str) -> dict[str, float]:
    return {
        dict(labels)["status"]: v
        for (n, labels), v in samples(text).items()
        if n == "trainhook_builds"
    }


def test_healthz_is_ok(client: TestClient):
    response = client.get("/healthz")
    assert (response.status_code, response.json()) == (200, {"status": "ok"})


def test_healthz_is_ok_even_when_database_is_down(down: TestClient):
    # Liveness must not fail on a DB outage, or every replica would be restarted for nothing.
    assert down.get("/healthz").status_code == 200
    assert down.get("/readyz").status_code == 503


def test_readyz_is_200_when_database_answers(client: TestClient):
    response = client.get("/readyz")
    assert (response.status_code, response.json()) == (200, {"status": "ok"})


def test_readyz_is_503_when_database_is_down(down: TestClient):
    response = down.get("/readyz")
    assert response.status_code == 503
    assert response.json() == {"status": "unavailable", "reason": "database unreachable"}
    assert DOWN_PASSWORD not in response.text and "no-such-dir" not in response.text


def test_readyz_is_503_in_time_when_database_hangs(client, engine: sa.Engine, monkeypatch):
    monkeypatch.setattr("service.health.DB_TIMEOUT", 0.2)

    def stall(*args: Any) -> None:
        time.sleep(1.5)

    sa.event.listen(engine, "before_cursor_execute", stall)
    try:
        started = time.monotonic()
        response = client.get("/readyz")
        took = time.monotonic() - started
    finally:
        sa.event.remove(engine, "before_cursor_execute", stall)
    assert response.status_code == 503
    assert took < 1.0, f"the probe waited {took:.2f}s for a hung database"


def test_metrics_exposes_the_runtime_registry(client: TestClient, runtime: Runtime):
    # Real deliveries, counted by the webhook route itself: two queued, one refused (401).
    for delivery in ("d-1", "d-2"):
        assert client.post("/webhooks/github", **github_request(delivery)).status_code == 202
    forged = github_request("d-3")
    forged["headers"]["X-Hub-Signature-256"] = "sha256=" + "0" * 64
    assert client.post("/webhooks/github", **forged).status_code == 401

    response = client.get("/metrics")

    assert response.status_code == 200
    assert response.headers["content-type"] == CONTENT_TYPE_LATEST
    found = samples(response.text)
    queued = ("trainhook_webhooks_total", (("outcome", "queued"), ("provider", "github")))
    refused = ("trainhook_webhooks_total", (("outcome", "401"), ("provider", "github")))
    assert (found[queued], found[refused]) == (2.0, 1.0)
    assert found[("trainhook_database_up", ())] == 1.0


def github_request(delivery: str) -> dict[str, Any]:
    from tests.service.github_payloads import push_payload, signed

    raw, headers = signed(push_payload(), delivery=delivery)
    return {"content": raw, "headers": headers}


def test_metrics_counts_builds_by_status_at_scrape_time(client: TestClient, engine: sa.Engine):
    assert builds_gauge(client.get("/metrics").text) == {
        "queued": 0,
        "running": 0,
        "succeeded": 0,
        "failed": 0,
        "cancelled": 0,
        "superseded": 0,
    }
    for status in ("queued", "queued", "running", "succeeded", "failed", "superseded"):
        make_build(engine, status=status)
    with count_selects(engine) as selects:
        text = client.get("/metrics").text
    assert builds_gauge(text) == {
        "queued": 2,
        "running": 1,
        "succeeded": 1,
        "failed": 1,
        "cancelled": 0,
        "superseded": 1,
    }
    # One query for the builds, one for the queue (depth and oldest waiting job).
    assert len(selects) == 2 and all("GROUP BY" in s.upper() for s in selects)


def test_metrics_still_answers_when_database_is_down(down: TestClient):
    response = down.get("/metrics")
    assert response.status_code == 200
    found = samples(response.text)
    assert found[("trainhook_database_up", ())] == 0.0
    assert builds_gauge(response.text) == {}
    assert "trainhook_stage_duration_seconds" in response.text

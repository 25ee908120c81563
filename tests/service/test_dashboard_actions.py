"""POST /api/builds/{id}/cancel behind the /rebuild token, and the worker's `is_cancelled`."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import sqlalchemy as sa
from starlette.testclient import TestClient

from service.app import create_app
from tests.service.test_api import make_build
from trainhook.builds import add_event, is_cancelled, mark_finished
from trainhook.buildview import get_build
from trainhook.runtime import build_runtime
from trainhook.settings import Settings

TOKEN = {"Authorization": "Bearer test-token-0123456789"}


def stages(engine: sa.Engine, build_id: int) -> dict[str, tuple[str, str | None]]:
    with engine.connect() as conn:
        build = get_build(conn, build_id)
    assert build is not None
    return {s["name"]: (s["status"], s["detail"]) for s in build["stages"]}


def status(engine: sa.Engine, build_id: int) -> str:
    with engine.connect() as conn:
        return conn.execute(
            sa.text(f"SELECT status FROM builds WHERE id = {build_id}")
        ).scalar_one()


def test_cancel_running_build_marks_it_and_notes_the_running_stage(client, engine):
    build_id = make_build(engine, status="running", stages={"train": ("running", None, None)})
    response = client.post(f"/api/builds/{build_id}/cancel", headers=TOKEN)
    assert response.status_code == 200
    assert response.json() == {
        "status": "cancelled",
        "build_id": build_id,
        "status_url": f"/builds/{build_id}",
    }
    assert status(engine, build_id) == "cancelled"
    train_status, detail = stages(engine, build_id)["train"]
    # The stage keeps running: the worker stops at the next boundary, not mid-training.
    assert train_status == "running" and "cancel requested" in (detail or "")
    with engine.connect() as conn:
        assert is_cancelled(conn, build_id)


def test_cancel_queued_build_skips_its_wait(client: TestClient, engine: sa.Engine):
    build_id = make_build(engine)
    assert client.post(f"/api/builds/{build_id}/cancel", headers=TOKEN).status_code == 200
    assert stages(engine, build_id)["queued"][0] == "skipped"
    between = make_build(engine, status="running", stages={"test": ("succeeded", "ok", None)})
    assert client.post(f"/api/builds/{between}/cancel", headers=TOKEN).status_code == 200
    assert stages(engine, between)["hash"] == (
        "skipped",
        "cancelled (cancelled from the status page or API)",
    )
    assert stages(engine, between)["test"] == ("succeeded", "ok")  # finished stages untouched


def test_cancel_finished_build_is_409_and_changes_nothing(client: TestClient, engine):
    build_id = make_build(engine, status="succeeded")
    response = client.post(f"/api/builds/{build_id}/cancel", headers=TOKEN)
    assert response.status_code == 409 and "already succeeded" in response.json()["error"]
    assert status(engine, build_id) == "succeeded"


@pytest.mark.parametrize("header", [None, "Bearer wrong", "Basic dGVzdA==", "Bearer "])
def test_cancel_without_the_token_is_401(client: TestClient, engine, header: str | None):
    build_id = make_build(engine, status="running")
    headers = {"Authorization": header} if header else {}
    response = client.post(f"/api/builds/{build_id}/cancel", headers=headers)
    assert response.status_code == 401 and response.headers["www-authenticate"] == "Bearer"
    assert status(engine, build_id) == "running"


def test_cancel_unknown_or_malformed_build(client: TestClient):
    assert client.post("/api/builds/424242/cancel", headers=TOKEN).status_code == 404
    assert client.post("/api/builds/abc/cancel", headers=TOKEN).status_code == 400
    assert client.get("/api/builds/1/cancel").status_code == 405


def test_cancel_is_503_when_no_token_is_configured(
    db_url: str, engine: sa.Engine, make_settings: Callable[..., Settings]
):
    runtime = build_runtime(make_settings(db_url, env={"TRAINHOOK_API_TOKEN": None}), engine)
    build_id = make_build(engine, status="running")
    with TestClient(create_app(runtime)) as unconfigured:
        response = unconfigured.post(f"/api/builds/{build_id}/cancel", headers=TOKEN)
    assert response.status_code == 503 and "not configured" in response.json()["error"]


def test_is_cancelled_is_true_only_when_someone_else_ended_the_build(engine: sa.Engine):
    running = make_build(engine, status="running")
    done = make_build(engine, status="succeeded")
    superseded = make_build(engine, status="running")
    with engine.begin() as conn:
        mark_finished(conn, superseded, "superseded")
        add_event(conn, superseded, "checkout", "skipped", detail="superseded")
        assert not is_cancelled(conn, running) and not is_cancelled(conn, done)
        assert is_cancelled(conn, superseded) and not is_cancelled(conn, 999)


def test_cancel_counts_in_the_builds_metric(client: TestClient, engine: sa.Engine):
    build_id = make_build(engine, status="running")
    client.post(f"/api/builds/{build_id}/cancel", headers=TOKEN)
    assert 'trainhook_builds_finished_total{status="cancelled"} 1.0' in client.get("/metrics").text

"""POST /rebuild: bearer token, by ref or by sha, force."""

from __future__ import annotations

import pytest
from starlette.testclient import TestClient

from service.app import create_app
from tests.service.conftest import counts
from trainhook.buildview import get_build
from trainhook.runtime import Runtime, build_runtime

TOKEN = "test-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
REPO = "octo-org/social-score-api"


def test_rebuild_by_ref_queues_a_forced_build(client: TestClient, runtime: Runtime):
    response = client.post(
        "/rebuild", json={"repo": REPO, "ref": "main", "force": True}, headers=AUTH
    )
    assert response.status_code == 202
    build_id = response.json()["build_id"]
    assert response.json()["status_url"] == f"/builds/{build_id}"
    with runtime.engine.connect() as conn:
        build = get_build(conn, build_id)
    assert build is not None
    assert (build["trigger"], build["ref"], build["force"]) == ("rebuild", "refs/heads/main", True)


def test_rebuild_by_sha(client: TestClient, runtime: Runtime):
    sha = "a" * 40
    response = client.post("/rebuild", json={"repo": REPO, "sha": sha}, headers=AUTH)
    assert response.status_code == 202
    with runtime.engine.connect() as conn:
        build = get_build(conn, response.json()["build_id"])
    assert build is not None and build["sha"] == sha and build["force"] is False


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}, {"Authorization": "Basic x"}],
    ids=["none", "wrong", "no-scheme", "basic"],
)
def test_rebuild_without_valid_token_is_401(client: TestClient, runtime: Runtime, headers):
    response = client.post("/rebuild", json={"repo": REPO, "ref": "main"}, headers=headers)
    assert response.status_code == 401
    assert counts(runtime.engine)["builds"] == 0


def test_rebuild_is_503_when_no_token_is_configured(db_url, engine, make_settings):
    runtime = build_runtime(make_settings(db_url, env={"TRAINHOOK_API_TOKEN": None}), engine)
    with TestClient(create_app(runtime)) as client:
        response = client.post("/rebuild", json={"repo": REPO, "ref": "main"}, headers=AUTH)
    assert response.status_code == 503
    assert "not configured" in response.json()["error"]


@pytest.mark.parametrize(
    "body,status,words",
    [
        ({"repo": "nobody/nothing", "ref": "main"}, 404, "not configured"),
        ({"ref": "main"}, 400, "repo"),
        ({"repo": REPO}, 400, "exactly one"),
        ({"repo": REPO, "ref": "main", "sha": "a" * 40}, 400, "exactly one"),
        ({"repo": REPO, "sha": "abc"}, 400, "sha"),
        ({"repo": REPO, "ref": "main..evil"}, 400, "ref"),
        ({"repo": REPO, "ref": "main", "force": "yes"}, 400, "force"),
        ({"repo": REPO, "ref": "main", "branch": "x"}, 400, "branch"),
    ],
)
def test_bad_rebuild_requests_are_refused_with_a_message(client, runtime, body, status, words):
    response = client.post("/rebuild", json=body, headers=AUTH)
    assert response.status_code == status
    assert words in response.json()["error"]
    assert counts(runtime.engine)["builds"] == 0


def test_rebuild_with_malformed_json_is_400(client: TestClient):
    response = client.post("/rebuild", content=b"{oops", headers=AUTH)
    assert response.status_code == 400

"""GET /api/builds and /api/builds/{id}: the contract's JSON, validation and keyset pagination.

`make_build`, `count_selects` and `broken_engine` are shared by the page and health tests.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from starlette.testclient import TestClient

from tests.support.postgres import free_port
from trainhook.builds import (
    STAGES,
    TERMINAL_BUILD,
    BuildSpec,
    add_event,
    append_log,
    create_build,
    mark_finished,
    mark_started,
)
from trainhook.models import utcnow

REPO = "octo-org/social-score-api"
CONTRACT_FIELDS = {
    "id",
    "repo",
    "ref",
    "sha",
    "trigger",
    "status",
    "created_at",
    "started_at",
    "finished_at",
    "duration_s",
    "cache_key",
    "stages",
}
STAGE_FIELDS = {"name", "status", "started_at", "finished_at", "duration_s", "cache", "detail"}
# A password that must never reach a client.
DOWN_PASSWORD = "pw-Sup3rSecret-42"

Stage = tuple[str, str | None, str | None]  # (status, detail, cache)


def make_build(
    engine: sa.Engine,
    *,
    repo: str = REPO,
    ref: str = "refs/heads/main",
    sha: str = "0123456789abcdef0123456789abcdef01234567",
    status: str = "queued",
    message: str | None = "Retrain on fresh data\n\nLonger body of the commit.",
    author: str | None = "Octo Cat",
    trigger: str = "push",
    stages: dict[str, Stage] | None = None,
    times: dict[str, tuple[float, float | None]] | None = None,
    logs: dict[str, str] | None = None,
    error: str | None = None,
    created_ago: float = 0.0,
) -> int:
    """A build in any state, written through the same functions the receiver and worker use.

    `times` places stage events at (start, end) seconds after creation; `created_ago` moves
    creation into the past so those offsets lie before now.
    """
    created = utcnow() - timedelta(seconds=created_ago)
    spec = BuildSpec(
        provider="github",
        repo=repo,
        ref=ref,
        sha=sha,
        trigger=trigger,
        commit_message=message,
        author=author,
    )
    with engine.begin() as conn:
        build_id = create_build(conn, spec, received_at=created)
        if status == "running" or (status != "queued" and stages):
            mark_started(conn, build_id)
            add_event(conn, build_id, "queued", "succeeded")
        for name, (stage_status, detail, cache) in (stages or {}).items():
            start, end = (times or {}).get(name, (None, None))
            add_event(conn, build_id, name, "running", at=_at(created, start))
            add_event(
                conn, build_id, name, stage_status, detail=detail, cache=cache, at=_at(created, end)
            )
        for name, text in (logs or {}).items():
            append_log(conn, build_id, name, text)
        if status in TERMINAL_BUILD:
            mark_finished(conn, build_id, status, error)
    return build_id


def _at(created: datetime, offset: float | None) -> datetime | None:
    return None if offset is None else created + timedelta(seconds=offset)


@contextlib.contextmanager
def count_selects(engine: sa.Engine) -> Iterator[list[str]]:
    """Collect the SELECT statements run on `engine` (BEGIN and pragmas are not queries)."""
    seen: list[str] = []

    def listener(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            seen.append(statement)

    sa.event.listen(engine, "before_cursor_execute", listener)
    try:
        yield seen
    finally:
        sa.event.remove(engine, "before_cursor_execute", listener)


def broken_url(db_url: str, tmp_path: Path) -> str:
    """A URL of the same kind as `db_url` whose database cannot be reached."""
    if db_url.startswith("sqlite"):
        return f"sqlite:///{tmp_path / 'no-such-dir' / 'trainhook.db'}"
    return f"postgresql+psycopg://trainhook:{DOWN_PASSWORD}@127.0.0.1:{free_port()}/trainhook"


def broken_engine(db_url: str, tmp_path: Path) -> sa.Engine:
    # Not make_engine: for SQLite it would create the missing directory and "fix" the outage.
    return sa.create_engine(broken_url(db_url, tmp_path))


def ids(response: Any) -> list[int]:
    return [b["id"] for b in response.json()["builds"]]


def test_list_is_newest_first_and_pages_by_cursor(client: TestClient, engine: sa.Engine):
    made = [make_build(engine) for _ in range(5)]
    seen, cursor, pages = [], None, 0
    while True:
        params = {"limit": "2"} | ({"before": cursor} if cursor else {})
        response = client.get("/api/builds", params=params)
        assert response.status_code == 200
        body = response.json()
        assert set(body) == {"builds", "next"}
        assert len(body["builds"]) <= 2
        seen += ids(response)
        pages += 1
        cursor = body["next"]
        if cursor is None:
            break
        assert isinstance(cursor, str)
    assert seen == sorted(made, reverse=True)
    assert pages == 3


def test_build_has_contract_fields_and_ten_stages_in_order(client: TestClient, engine):
    build_id = make_build(
        engine,
        status="succeeded",
        stages={"checkout": ("succeeded", None, None), "train": ("succeeded", "reused", "hit")},
    )
    response = client.get(f"/api/builds/{build_id}")
    assert response.status_code == 200
    build = response.json()
    assert set(build) >= CONTRACT_FIELDS
    assert build["id"] == build_id and build["status"] == "succeeded"
    assert [s["name"] for s in build["stages"]] == list(STAGES)
    assert all(set(s) == STAGE_FIELDS for s in build["stages"])
    train = build["stages"][STAGES.index("train")]
    assert (train["status"], train["cache"], train["detail"]) == ("succeeded", "hit", "reused")
    assert build["created_at"].endswith("Z") and build["finished_at"].endswith("Z")
    assert isinstance(build["duration_s"], float)
    listed = client.get("/api/builds").json()["builds"]
    assert listed == [build]


def test_list_filters_by_repo_and_status(client: TestClient, engine: sa.Engine):
    a_ok = make_build(engine, repo="a/one", status="succeeded")
    a_bad = make_build(engine, repo="a/one", status="failed", error="boom")
    b_ok = make_build(engine, repo="b/two", status="succeeded")
    assert ids(client.get("/api/builds", params={"repo": "a/one"})) == [a_bad, a_ok]
    assert ids(client.get("/api/builds", params={"status": "succeeded"})) == [b_ok, a_ok]
    both = client.get("/api/builds", params={"repo": "a/one", "status": "succeeded"})
    assert ids(both) == [a_ok]
    assert ids(client.get("/api/builds", params={"repo": "c/none"})) == []


def test_empty_filter_values_mean_no_filter(client: TestClient, engine: sa.Engine):
    made = [make_build(engine), make_build(engine, status="failed")]
    response = client.get("/api/builds?repo=&status=&limit=&before=")
    assert response.status_code == 200
    assert ids(response) == sorted(made, reverse=True)


@pytest.mark.parametrize(
    "query,param",
    [
        ("limit=abc", "limit"),
        ("limit=0", "limit"),
        ("limit=-5", "limit"),
        ("limit=2.5", "limit"),
        ("before=abc", "before"),
        ("before=0", "before"),
        ("before=%207", "before"),
        ("status=done", "status"),
        ("status=QUEUED", "status"),
    ],
)
def test_invalid_parameter_is_400_naming_it(client: TestClient, query: str, param: str):
    response = client.get(f"/api/builds?{query}")
    assert response.status_code == 400
    assert f"'{param}'" in response.json()["error"]


def test_limit_is_capped_at_200(client: TestClient, engine: sa.Engine):
    spec = BuildSpec(provider="github", repo=REPO, ref="refs/heads/main", sha="a" * 40)
    with engine.begin() as conn:
        for _ in range(205):
            create_build(conn, spec)
    body = client.get("/api/builds", params={"limit": "1000"}).json()
    assert len(body["builds"]) == 200
    assert body["next"] is not None
    rest = client.get("/api/builds", params={"limit": "1000", "before": body["next"]}).json()
    assert len(rest["builds"]) == 5 and rest["next"] is None


def test_cursor_past_every_id_lists_from_the_newest(client: TestClient, engine: sa.Engine):
    made = [make_build(engine) for _ in range(2)]
    response = client.get("/api/builds", params={"before": "9" * 30})
    assert response.status_code == 200
    assert ids(response) == sorted(made, reverse=True)


def test_unknown_build_is_404_with_error(client: TestClient, engine: sa.Engine):
    make_build(engine)
    for missing in ("999", "9" * 30):
        response = client.get(f"/api/builds/{missing}")
        assert response.status_code == 404
        assert "not found" in response.json()["error"]


@pytest.mark.parametrize("raw", ["abc", "1.5", "-1", "0", "1e3", "%EF%BC%91"])
def test_non_integer_build_id_is_400(client: TestClient, raw: str):
    response = client.get(f"/api/builds/{raw}")
    assert response.status_code == 400
    assert "'id'" in response.json()["error"]


def test_list_reads_builds_and_stages_in_two_queries(client: TestClient, engine: sa.Engine):
    for status in ("queued", "running", "succeeded", "failed"):
        make_build(engine, status=status, stages={"checkout": ("succeeded", None, None)})
    with count_selects(engine) as selects:
        response = client.get("/api/builds")
    assert response.status_code == 200 and len(response.json()["builds"]) == 4
    assert len(selects) == 2, selects


def test_api_is_503_without_leaking_the_url_when_database_is_down(
    db_url: str, tmp_path: Path, make_settings: Any
):
    from service.app import create_app
    from trainhook.runtime import build_runtime

    runtime = build_runtime(make_settings(db_url), broken_engine(db_url, tmp_path))
    with TestClient(create_app(runtime)) as down:
        for path in ("/api/builds", "/api/builds/1"):
            response = down.get(path)
            assert response.status_code == 503
            assert response.json() == {"error": "database unavailable"}
            assert DOWN_PASSWORD not in response.text and "no-such-dir" not in response.text


def test_api_answers_carry_nosniff_and_csp(client: TestClient):
    response = client.get("/api/builds")
    assert response.headers["x-content-type-options"] == "nosniff"
    assert "default-src 'none'" in response.headers["content-security-policy"]
    assert response.headers["content-type"].startswith("application/json")


def test_list_filters_by_trigger(client: TestClient, engine: sa.Engine):
    push = make_build(engine)
    pull = make_build(engine, ref="refs/pull/7/head", trigger="pull_request")
    rebuild = make_build(engine, trigger="rebuild")
    assert ids(client.get("/api/builds", params={"trigger": "pull_request"})) == [pull]
    assert ids(client.get("/api/builds", params={"trigger": "push"})) == [push]
    assert ids(client.get("/api/builds?trigger=")) == [rebuild, pull, push]


def test_unknown_trigger_is_400_naming_the_parameter_and_the_values(client: TestClient):
    response = client.get("/api/builds?trigger=cron")
    assert response.status_code == 400
    error = response.json()["error"]
    assert "'trigger'" in error and "pull_request" in error and "'cron'" in error


def test_a_pull_request_build_links_to_its_request_on_the_forge(client: TestClient, engine):
    pull = make_build(engine, ref="refs/pull/7/head", trigger="pull_request")
    push = make_build(engine)
    listed = {b["id"]: b for b in client.get("/api/builds").json()["builds"]}
    link = {"number": 7, "url": "https://github.com/octo-org/social-score-api/pull/7"}
    assert listed[pull]["pull_request"] == link
    assert listed[push]["pull_request"] is None
    assert client.get(f"/api/builds/{pull}").json()["pull_request"] == link

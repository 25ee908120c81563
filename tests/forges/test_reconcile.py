"""Missed deliveries: `trainhook reconcile` and the periodic reconciler against a fake GitHub."""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from starlette.testclient import TestClient

from service.app import create_app
from service.reconcile import Reconciler, reconcile
from tests.conftest import SECRET
from tests.forges.fakeforge import FakeForge, Seen
from trainhook import cli
from trainhook.models import deliveries, utcnow
from trainhook.runtime import build_runtime

TOKEN = "ghp_" + "R3c0nc1le" * 4
REPO = "/repos/octo-org/social-score-api"
PUBLIC = "https://ci.example.org"


def ago(**delta: float) -> str:
    return (utcnow() - timedelta(**delta)).strftime("%Y-%m-%dT%H:%M:%SZ")


def attempt(id_: int, guid: str, code: int, redelivery: bool = False, **when: float):
    return {"id": id_, "guid": guid, "delivered_at": ago(**(when or {"minutes": 5})),
            "redelivery": redelivery, "duration": 0.3, "status": "OK" if code < 300 else "failed",
            "status_code": code, "event": "push", "action": None}  # fmt: skip


PAGE_1 = [
    attempt(10, "recorded-ok", 202),
    attempt(9, "failed-503", 503),
    attempt(8, "lost-here", 202),  # answered 2xx, but this database has no row (a restore)
    attempt(7, "timed-out-but-stored", 0),
    attempt(6, "bad-secret", 401, True),
    attempt(5, "bad-secret", 401, True),
]
PAGE_2 = [
    attempt(4, "bad-secret", 401, True),
    attempt(3, "bad-secret", 401),
    attempt(2, "too-old", 503, days=2),
]
PAGE_3 = [attempt(1, "never-read", 503, days=3)]


def github(forge: FakeForge, hooks: list[dict[str, Any]] | None = None):
    """Answer as GitHub's hooks and deliveries API does (three pages, Link headers)."""

    def handle(seen: Seen):
        assert seen.headers["authorization"] == f"Bearer {TOKEN}"
        if seen.target == f"GET {REPO}/hooks":
            return 200, hooks or []
        if seen.target == f"GET {REPO}/hooks/123/deliveries":
            cursor = dict(p.split("=") for p in seen.query.split("&")).get("cursor")
            page, nxt = {None: (PAGE_1, "p2"), "p2": (PAGE_2, "p3"), "p3": (PAGE_3, None)}[cursor]
            link = f'<{forge.url}{REPO}/hooks/123/deliveries?per_page=100&cursor={nxt}>; rel="next"'
            return 200, page, ({"Link": link} if nxt else {})
        if seen.method == "POST" and seen.path.endswith("/attempts"):
            return 202, {}
        return 404, {"message": "Not Found"}

    forge.handler = handle


@pytest.fixture
def environment(make_settings, forge, monkeypatch, db_url, tmp_path):
    """The repositories file and environment `trainhook` runs with; returns settings."""

    def setup(extra: str = "hook_id = 123", **env: str):
        lines = f'forge_token_env = "FORGE_TOKEN"\nforge_api_url = "{forge.url}"\n{extra}'
        values = {"FORGE_TOKEN": TOKEN, "TRAINHOOK_PUBLIC_URL": PUBLIC, **env}
        settings = make_settings(db_url, extra=lines, env=values)
        for key, value in {
            "TRAINHOOK_HOME": str(tmp_path / "home"),
            "TRAINHOOK_CONFIG": str(tmp_path / "trainhook.toml"),
            "TRAINHOOK_DATABASE_URL": db_url,
            "TEST_WEBHOOK_SECRET": SECRET,
            **values,
        }.items():
            monkeypatch.setenv(key, value)
        return settings

    return setup


def store(engine: sa.Engine, *guids: str) -> None:
    with engine.begin() as conn:
        for guid in guids:
            conn.execute(deliveries.insert().values(
                provider="github", hook_id="123", delivery_id=guid, event="push",
                repo="octo-org/social-score-api", received_at=utcnow(), headers="{}", body=b"{}",
                outcome="queued"))  # fmt: skip


def posted(forge: FakeForge) -> list[str]:
    return [s.path for s in forge.seen if s.method == "POST"]


def test_reconcile_redelivers_what_failed_or_is_not_recorded_and_says_so(
    environment, engine, forge, capsys
):
    environment()
    github(forge)
    store(engine, "recorded-ok", "timed-out-but-stored")

    assert cli.main(["reconcile", "--since", "1d"]) == 0

    assert posted(forge) == [
        f"{REPO}/hooks/123/deliveries/9/attempts",
        f"{REPO}/hooks/123/deliveries/8/attempts",
    ]
    out = capsys.readouterr().out
    assert "octo-org/social-score-api (hook 123): 8 deliveries, 5 distinct" in out
    assert "redelivered failed-503 (push): no record here; GitHub saw 503" in out
    assert "redelivered lost-here (push): no record here; GitHub saw 202" in out
    assert "given up bad-secret (push): not recorded after 3 redeliveries; GitHub saw 401" in out
    assert "2 recorded here, 2 redelivered, 1 given up" in out
    assert "too-old" not in out and "never-read" not in out
    reads = [s for s in forge.seen if s.method == "GET"]
    assert len(reads) == 2  # page 2 reached back past --since: page 3 is never read
    assert reads[0].query == "per_page=100" and reads[1].query.endswith("cursor=p2")


def test_dry_run_says_what_it_would_redeliver_and_sends_nothing(environment, forge, capsys):
    environment()
    github(forge)
    assert cli.main(["reconcile", "--since", "1d", "--dry-run"]) == 0
    assert posted(forge) == []
    assert "would redeliver failed-503" in capsys.readouterr().out


def test_the_hook_is_found_by_the_public_webhook_url(environment, forge, capsys):
    environment(extra="")
    github(forge, hooks=[
        {"id": 7, "config": {"url": "https://chat.example/hook"}},
        {"id": 123, "config": {"url": f"{PUBLIC}/webhooks/github"}},
        {"id": 9, "config": {"url": "https://staging.example.org/webhooks/github"}},
    ])  # fmt: skip
    assert cli.main(["reconcile", "--since", "1d"]) == 0
    assert "(hook 123)" in capsys.readouterr().out


def test_no_matching_hook_is_an_error_that_says_to_set_hook_id(environment, forge, capsys):
    environment(extra="")
    github(forge, hooks=[{"id": 7, "config": {"url": "https://chat.example/hook"}}])
    assert cli.main(["reconcile"]) == 1
    out = capsys.readouterr().out
    assert f"no hook delivering to {PUBLIC}/webhooks/github; set hook_id" in out


def test_a_next_link_to_another_host_is_not_followed_with_the_token(environment, engine, forge):
    settings = environment()

    def handle(seen: Seen):
        link = '<https://elsewhere.example/steal?cursor=x>; rel="next"'
        return 200, [attempt(1, "g", 503)], {"Link": link}

    forge.handler = handle
    (report,) = reconcile(settings, engine, utcnow() - timedelta(days=1))
    assert not report.failed and report.redelivered == 1
    assert len([s for s in forge.seen if s.method == "GET"]) == 1


def test_other_forges_and_repositories_without_a_token_are_skipped(
    make_settings, sqlite_url, sqlite_engine
):
    gitlab = make_settings(sqlite_url, provider="gitlab")
    (report,) = reconcile(gitlab, sqlite_engine, utcnow())
    assert report.lines == [
        "octo-org/social-score-api (gitlab): skipped, reconcile is for GitHub only"
    ]
    github_ = make_settings(sqlite_url)
    (report,) = reconcile(github_, sqlite_engine, utcnow())
    assert report.lines == ["octo-org/social-score-api: skipped, no forge token (forge_token_env)"]


def test_a_refused_token_is_reported_and_the_exit_code_says_so(environment, forge, capsys):
    environment()
    forge.handler = lambda seen: (401, {"message": "Bad credentials"})
    assert cli.main(["reconcile"]) == 1
    out = capsys.readouterr().out
    assert "error: list the deliveries of hook 123: HTTP 401 Bad credentials" in out
    assert TOKEN not in out


def test_the_service_reconciles_periodically_when_an_interval_is_set(environment, engine, forge):
    settings = environment(TRAINHOOK_RECONCILE_INTERVAL="0.2")
    github(forge)
    with TestClient(create_app(build_runtime(settings, engine))):
        deadline = time.monotonic() + 20
        while len(posted(forge)) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
    assert f"{REPO}/hooks/123/deliveries/9/attempts" in posted(forge)


def test_the_service_does_not_reconcile_by_default(environment, engine, forge):
    settings = environment()
    github(forge)
    assert settings.reconcile_interval == 0
    with TestClient(create_app(build_runtime(settings, engine))):
        # Started: had reconciling been on, its thread would be running now (no sleep can
        # prove a thread never acts; its absence does).
        running = [t.name for t in threading.enumerate()]
    assert "reconcile" not in running
    assert [s for s in forge.seen if "deliveries" in s.path] == []


def test_the_reconcile_thread_runs_only_with_an_interval(environment, engine):
    off = Reconciler(environment(), engine).start()
    on = Reconciler(environment(TRAINHOOK_RECONCILE_INTERVAL="3600"), engine).start()
    try:
        assert off._thread is None
        assert on._thread is not None and on._thread.name == "reconcile"
        assert on._thread.is_alive()
    finally:
        on.stop()
        off.stop()

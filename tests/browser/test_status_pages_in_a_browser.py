"""The status pages in a real browser: the list with its cache badges, a build turning green
live while it runs (no reload), a rebuild and a cancel from the page with the token, payloads
shown as text with no script run, and the page refreshing itself without JavaScript."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from google.cloud.devtools.cloudbuild_v1 import Build

from tests.browser.cdp import Page
from tests.browser.conftest import save_screenshot
from tests.browser.server import LiveServer
from tests.service.test_api import make_build
from tests.service.test_dashboard_pages import FORGED, HASH, TRAIN_HIT, TRAIN_MISS
from trainhook.builds import add_event, append_log, mark_finished
from trainhook.models import builds, stage_events
from worker.cloudbuild.builder import record_detail

TOKEN = "test-token-0123456789"
XSS_MESSAGE = '<img src=x onerror="window.__xss=1;alert(1)">Retrain'
XSS_BRANCH = "refs/heads/<script>window.__xss=2;alert(2)</script>"


def badge(page: Page, selector: str) -> str | None:
    return page.eval(f"document.querySelector({json.dumps(selector)})?.textContent ?? null")


def console_errors(page: Page) -> list[str]:
    """CSP violations, failed loads and other errors the browser logged."""
    entries = [e["entry"] for e in page.events("Log.entryAdded")]
    return [e.get("text", "") for e in entries if e.get("level") in ("error", "warning")]


def assert_page_healthy(page: Page, expected: str = "\0") -> None:
    """No uncaught exception, no dialog, nothing blocked by the CSP, no failed load (but the
    `expected` one)."""
    assert page.events("Runtime.exceptionThrown") == []
    assert page.events("Page.javascriptDialogOpening") == []
    assert [e for e in console_errors(page) if expected not in e] == []


def age(engine: sa.Engine, build_id: int, seconds: float) -> None:
    """Move a build `seconds` into the past; a finished one ends with its last event."""
    shift = timedelta(seconds=seconds)
    with engine.begin() as conn:
        events = conn.execute(
            sa.select(stage_events).where(stage_events.c.build_id == build_id)
        ).all()
        for event in events:
            conn.execute(
                stage_events.update()
                .where(stage_events.c.id == event.id)
                .values(at=event.at - shift)
            )
        row = conn.execute(sa.select(builds).where(builds.c.id == build_id)).one()
        last = max(e.at for e in events) - shift
        conn.execute(
            builds.update()
            .where(builds.c.id == build_id)
            .values(
                created_at=row.created_at - shift,
                started_at=row.started_at and row.started_at - shift,
                finished_at=row.finished_at and last,
            )
        )


def made(engine: sa.Engine, ago: float, **kwargs: Any) -> int:
    """A build whose stage `times` (seconds after the webhook) all lie `ago` seconds back."""
    build_id = make_build(engine, **kwargs)
    age(engine, build_id, ago)
    return build_id


def timeline(train: float) -> dict[str, tuple[float, float]]:
    """Stage (start, end) seconds after the webhook of a whole build training for `train`."""
    end = 6.5 + train
    return {
        "checkout": (0.4, 2.1),
        "test": (2.1, 6.3),
        "hash": (6.3, 6.5),
        "train": (6.5, end),
        "build": (end, end + 9.0),
        "push": (end + 9.0, end + 10.2),
        "deploy": (end + 10.2, end + 14.0),
        "vertex": (end + 14.0, end + 14.0),
    }


def finished_stages(hash_levels: str, train: str, cache: str) -> dict[str, Any]:
    return {
        "checkout": ("succeeded", "4f2c1a9e0b7d: mirror fetched, 14 entries exported", None),
        "test": ("succeeded", "python -m pytest -q passed in 4.1s: 12 passed", None),
        "hash": ("succeeded", HASH + hash_levels, None),
        "train": ("succeeded", train, cache),
        "build": ("succeeded", "bundle b1.tar.gz 48211 bytes sha256:" + "9c" * 32, None),
        "push": ("succeeded", "b1 sha256:9c9c9c9c9c9c9c9c pushed", None),
        "deploy": ("succeeded", "b1 is current (was none); health check scored 3 texts", None),
        "vertex": ("skipped", "Vertex AI pipelines need the Cloud Build builder", None),
    }


def seed(engine: sa.Engine) -> dict[str, int]:
    first = made(
        engine, 400, status="succeeded", sha="a" * 40, message="Train the first model",
        stages=finished_stages("; deps miss nltk miss", TRAIN_MISS, "miss"), times=timeline(58.0),
    )  # fmt: skip
    cached = made(
        engine, 300, status="succeeded", sha="b" * 40, message="Tweak the API docs only",
        stages=finished_stages("; deps hit nltk hit", TRAIN_HIT, "hit"), times=timeline(0.3),
    )  # fmt: skip
    failed = made(
        engine,
        200,
        status="failed",
        message="Break the tests",
        stages={"checkout": ("succeeded", None, None), "test": ("failed", "2 failed", None)},
        times={"checkout": (0.4, 2.0), "test": (2.0, 7.5)},
        error="stage test failed: 2 failed",
    )
    running = made(
        engine,
        4,
        status="running",
        message="Retrain on fresh data",
        stages={"checkout": ("running", None, None)},
        times={"checkout": (0.4, None)},
    )
    return {"first": first, "cached": cached, "failed": failed, "running": running}


def test_list_shows_builds_with_cache_badges(page: Page, site: LiveServer, engine):
    made = seed(engine)
    page.goto(site.url + "/")
    ids = page.eval(
        "[...document.querySelectorAll('#builds tbody tr')].map(r => +r.dataset.buildId)"
    )
    assert ids == [made["running"], made["failed"], made["cached"], made["first"]]
    levels = page.eval(
        f"[...document.querySelectorAll('tr[data-build-id=\"{made['cached']}\"] [data-level]')]"
        ".map(b => b.textContent.trim())"
    )
    assert levels == ["deps hit", "nltk hit", "model hit"]
    page.wait_for("document.querySelector('#live')?.textContent === 'live'")
    save_screenshot(page, "status-list.png", docs=True)
    # Live: a row's stage cell changes colour, and a new build is announced, without a reload.
    page.eval("window.__samePage = 7")
    with engine.begin() as conn:
        add_event(conn, made["running"], "checkout", "succeeded")
    cell = f'tr[data-build-id="{made["running"]}"] li[data-stage=checkout]'
    page.wait_for(f"document.querySelector('{cell}').className === 's-succeeded'")
    make_build(engine)
    page.wait_for("!document.querySelector('#new-builds').hidden")
    assert "1 new build" in page.eval("document.querySelector('#new-builds').textContent")
    assert page.eval("window.__samePage") == 7
    assert_page_healthy(page)
    page.goto(f"{site.url}/builds/{made['first']}")
    drawn = "document.querySelectorAll('#waterfall rect.bar:not([visibility])').length"
    assert page.eval(drawn) == 10  # every stage on the timeline
    save_screenshot(page, "status-build-finished.png", docs=True)
    page.goto(site.url + "/repos/octo-org/social-score-api/history")
    assert page.eval("document.querySelectorAll('#history-chart rect.bar').length") == 3
    save_screenshot(page, "status-history.png", docs=True)


def test_running_build_turns_green_live_without_reloading(
    page: Page, site: LiveServer, engine: sa.Engine, monkeypatch: pytest.MonkeyPatch
):
    from service.rendering import env

    monkeypatch.setitem(env.globals, "REFRESH_SECONDS", 1)  # a no-JS reload would show quickly
    made = seed(engine)
    build_id = made["running"]
    page.goto(f"{site.url}/builds/{build_id}")
    page.eval("window.__samePage = 42")
    page.wait_for("document.querySelector('#live')?.textContent === 'live'")
    status = "#stage-{} [data-cell=status] .badge"

    with engine.begin() as conn:
        add_event(conn, build_id, "checkout", "succeeded", detail="abc123: mirror fetched")
        add_event(conn, build_id, "test", "running")
        append_log(conn, build_id, "test", "collected 12 items\n")
    page.wait_for(
        f"document.querySelector('{status.format('checkout')}').textContent === 'succeeded'"
    )
    assert "b-succeeded" in page.eval(
        f"document.querySelector('{status.format('checkout')}').className"
    )
    assert page.eval("document.querySelector('#waterfall g[data-stage=checkout] rect.bar')"
                     ".getAttribute('class')") == "bar s-succeeded"  # fmt: skip
    page.wait_for("document.querySelector('#log-test pre')?.textContent.includes('collected 12')")

    with engine.begin() as conn:
        add_event(conn, build_id, "test", "succeeded", detail="pytest passed in 1.2s: 12 passed")
        add_event(conn, build_id, "hash", "running")
        add_event(conn, build_id, "hash", "succeeded", detail=HASH + "; deps hit nltk miss")
        add_event(conn, build_id, "train", "running")
        add_event(conn, build_id, "train", "succeeded", detail=TRAIN_HIT, cache="hit")
    page.wait_for(f"document.querySelector('{status.format('train')}').textContent === 'succeeded'")
    page.wait_for("document.querySelector('#levels').textContent.includes('model hit')")
    assert "reused from build #4" in page.eval("document.querySelector('#stage-train').textContent")
    assert page.eval("document.querySelector('#stage-train a').getAttribute('href')") == "/builds/4"
    save_screenshot(page, "status-build-running.png", docs=True)

    with engine.begin() as conn:
        for stage in ("build", "push", "deploy"):
            add_event(conn, build_id, stage, "running")
            add_event(conn, build_id, stage, "succeeded")
        add_event(conn, build_id, "vertex", "skipped", detail="Vertex needs Cloud Build")
        mark_finished(conn, build_id, "succeeded")
    page.wait_for("document.querySelector('#build-status .badge').textContent === 'succeeded'")
    assert page.eval("window.__samePage") == 42  # updated in place: never reloaded
    assert page.eval("document.querySelector('#cancel').hidden") is True
    save_screenshot(page, "status-build.png")
    assert_page_healthy(page)


def test_rebuild_and_cancel_from_the_page_with_the_token(
    page: Page, site: LiveServer, engine: sa.Engine
):
    made = seed(engine)
    page.goto(f"{site.url}/builds/{made['cached']}")
    page.type("#token", "not-the-token")
    page.click("#rebuild")
    page.wait_for("document.querySelector('#action-result').textContent.includes('refused')")

    page.type("#token", TOKEN)
    page.click("#rebuild")
    new_id = page.wait_for(
        "location.pathname.match(/^\\/builds\\/(\\d+)$/) && +location.pathname.split('/')[2]"
        f" !== {made['cached']} && +location.pathname.split('/')[2]"
    )
    with engine.connect() as conn:
        row = conn.execute(
            sa.text('SELECT sha, "trigger", status FROM builds WHERE id = :id'), {"id": new_id}
        ).one()
    assert tuple(row) == ("b" * 40, "rebuild", "queued")
    assert page.eval("localStorage.getItem('trainhook.token')") == TOKEN  # entered once

    page.wait_for(
        "document.readyState === 'complete' && !document.querySelector('#actions').hidden"
    )
    page.click("#cancel")  # the token is remembered: no typing this time
    page.wait_for("document.querySelector('#build-status .badge').textContent === 'cancelled'")
    with engine.connect() as conn:
        status = conn.execute(sa.text(f"SELECT status FROM builds WHERE id = {new_id}")).scalar()
    assert status == "cancelled"
    assert_page_healthy(page, expected="status of 401")  # the wrong token, on purpose


def test_payloads_in_message_branch_and_details_show_as_text(
    page: Page, site: LiveServer, engine: sa.Engine
):
    build_id = make_build(
        engine,
        ref=XSS_BRANCH,
        message=XSS_MESSAGE,
        author='"><svg onload=alert(3)>',
        status="running",
        stages={"checkout": ("running", None, None)},
    )
    for path in ("/", f"/builds/{build_id}"):
        page.goto(site.url + path)
        text = page.eval("document.body.innerText")
        assert "<img src=x" in text and "<script>window.__xss=2" in text
        assert (
            page.eval("document.querySelectorAll('img, svg:not(.chart), main script').length") == 0
        )
    # A payload arriving live is text too.
    page.wait_for("document.querySelector('#live')?.textContent === 'live'")
    with engine.begin() as conn:
        add_event(conn, build_id, "checkout", "failed", detail="<img src=y onerror=alert(4)>")
    page.wait_for(
        "document.querySelector('#stage-checkout pre')?.textContent.includes('<img src=y')"
    )
    assert page.eval("window.__xss") is None
    assert_page_healthy(page)


def test_live_urls_in_details_are_text_and_only_the_builders_cloud_build_log_is_a_link(
    page: Page, site: LiveServer, engine: sa.Engine
):
    log_url = "https://console.cloud.google.com/cloud-build/builds/abc-123?project=p"
    record = record_detail(Build(id="abc-123", status=Build.Status.QUEUED, log_url=log_url))
    build_id = make_build(engine, status="running", stages={"checkout": ("running", None, None)})
    page.goto(f"{site.url}/builds/{build_id}")
    page.wait_for("document.querySelector('#live')?.textContent === 'live'")
    links = "[...document.querySelectorAll('#stage-{} a')].map((a) => a.href)"
    with engine.begin() as conn:
        add_event(conn, build_id, "test", "failed", detail=FORGED)
    page.wait_for("document.querySelector('#stage-test pre')?.textContent.includes('evil')")
    assert page.eval(links.format("test")) == []
    with engine.begin() as conn:  # as the Cloud Build builder writes them
        add_event(conn, build_id, "build", "pending", detail=record)
        add_event(conn, build_id, "build", "running", detail="Cloud Build step build")
        add_event(conn, build_id, "build", "succeeded", detail=f"built; logs {log_url}x")
    status = "document.querySelector('#stage-build [data-cell=status] .badge').textContent"
    page.wait_for(f"{status} === 'succeeded'")
    assert page.eval(links.format("build")) == [log_url]  # kept through the later events
    assert_page_healthy(page)


def test_without_javascript_a_running_build_page_refreshes_itself(
    page: Page, site: LiveServer, engine: sa.Engine, monkeypatch: pytest.MonkeyPatch
):
    from service.rendering import env

    monkeypatch.setitem(env.globals, "REFRESH_SECONDS", 1)
    build_id = make_build(engine, status="running", stages={"checkout": ("running", None, None)})
    page.call("Emulation.setScriptExecutionDisabled", value=True)
    page.goto(f"{site.url}/builds/{build_id}")
    assert page.eval("document.querySelector('#actions').hidden") is True  # needs JavaScript
    loads = len(page.events("Page.loadEventFired"))
    with engine.begin() as conn:
        add_event(conn, build_id, "checkout", "succeeded")
    page.wait(lambda: len(page.events("Page.loadEventFired")) > loads, 5, "a reload")
    page.wait_for(
        "document.querySelector('#stage-checkout [data-cell=status] .badge')?.textContent"
        " === 'succeeded'"
    )

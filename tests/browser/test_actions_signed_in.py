"""The build page's buttons for a signed-in person, in a real browser: after /login (token
access) or behind an authenticating proxy, rebuild and cancel ride on the session with the
page's CSRF token, and the audit trail names the person; a request with a forged or missing
CSRF token is refused and builds nothing."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import ExitStack

import pytest
import sqlalchemy as sa

from tests.browser.cdp import Page
from tests.browser.server import LiveServer, live_server
from tests.browser.test_status_pages_in_a_browser import assert_page_healthy
from tests.service.test_api import make_build
from trainhook.apitokens import add_token
from trainhook.runtime import build_runtime
from trainhook.settings import Settings

REBUILD = json.dumps({"repo": "octo-org/social-score-api", "sha": "c" * 40})


@pytest.fixture
def serve(
    sqlite_url: str, engine: sa.Engine, make_settings: Callable[..., Settings]
) -> Iterator[Callable[[str], LiveServer]]:
    with ExitStack() as servers:

        def start(access: str) -> LiveServer:
            settings = make_settings(sqlite_url, env={"TRAINHOOK_DASHBOARD_ACCESS": access})
            return servers.enter_context(live_server(build_runtime(settings, engine)))

        yield start


def build_count(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.text("SELECT count(*) FROM builds")).scalar_one())


def post_status(page: Page, path: str, csrf: str | None) -> int:
    """A same-origin POST carrying the session cookie, as a forging page's script would try."""
    headers = {"Content-Type": "application/json"}
    if csrf is not None:
        headers["X-CSRF-Token"] = csrf
    return int(
        page.eval(
            f"fetch({json.dumps(path)}, {{method: 'POST', credentials: 'same-origin',"
            f" headers: {json.dumps(headers)}, body: {json.dumps(REBUILD)}}})"
            ".then((r) => r.status)"
        )
    )


def assert_forged_and_missing_csrf_are_refused(page: Page, engine: sa.Engine, build_id: int):
    before = build_count(engine)
    real = page.eval("document.querySelector('#actions').dataset.csrf")
    assert real  # the page holds one: the refusals below are about its value
    for sent in ("forged-" + real[7:], "", None):
        assert post_status(page, "/rebuild", sent) == 401, sent
        assert post_status(page, f"/api/builds/{build_id}/cancel", sent) == 401, sent
    assert build_count(engine) == before


def wait_for_new_build(page: Page, old: int) -> int:
    return int(
        page.wait_for(
            "location.pathname.match(/^\\/builds\\/(\\d+)$/) && +location.pathname.split('/')[2]"
            f" !== {old} && document.readyState === 'complete' && +location.pathname.split('/')[2]"
        )
    )


def test_after_login_the_page_rebuilds_with_the_session_and_the_trail_names_the_person(
    page: Page, serve: Callable[[str], LiveServer], engine: sa.Engine
):
    site = serve("token")
    token = add_token(engine, "ada")
    old = make_build(engine, status="failed", sha="b" * 40)
    page.goto(f"{site.url}/builds/{old}")
    page.wait_for("location.pathname === '/login'")
    page.type("input[name=token]", token)
    page.click("button[type=submit]")
    page.wait_for(f"location.pathname === '/builds/{old}' && document.readyState === 'complete'")
    assert "ada" in page.eval("document.querySelector('#signed-in').textContent")
    assert page.eval("document.querySelector('#token')") is None  # nothing to type
    assert page.eval("document.cookie") == ""  # HttpOnly: no script reads the session

    assert_forged_and_missing_csrf_are_refused(page, engine, old)
    page.wait_for("!document.querySelector('#actions').hidden")
    page.click("#rebuild")
    new_id = wait_for_new_build(page, old)
    trail = page.wait_for("document.querySelector('#audit')?.textContent")
    assert "ada (cookie, from 127.0.0.1): rebuild made this build" in trail
    with engine.connect() as conn:
        row = conn.execute(
            sa.text('SELECT sha, "trigger" FROM builds WHERE id = :id'), {"id": new_id}
        ).one()
    assert tuple(row) == ("b" * 40, "rebuild")
    assert page.eval("localStorage.getItem('trainhook.token')") is None  # never stored

    page.wait_for("!document.querySelector('#actions').hidden")
    page.click("#cancel")
    page.wait_for("document.querySelector('#build-status .badge').textContent === 'cancelled'")
    page.goto(f"{site.url}/builds/{new_id}")
    assert "ada (cookie, from 127.0.0.1): cancel" in page.eval(
        "document.querySelector('#audit').textContent"
    )
    assert_page_healthy(page, expected="status of 401")  # the forged requests, on purpose


def test_behind_a_proxy_the_page_forces_a_rebuild_as_the_proxys_user(
    page: Page, serve: Callable[[str], LiveServer], engine: sa.Engine
):
    site = serve("proxy")
    page.call("Network.enable")
    page.call(
        "Network.setExtraHTTPHeaders",
        headers={"X-Goog-Authenticated-User-Email": "accounts.google.com:ada@example.com"},
    )
    old = make_build(engine, status="failed", sha="d" * 40)
    page.goto(f"{site.url}/builds/{old}")
    assert "ada@example.com" in page.eval("document.querySelector('#signed-in').textContent")
    assert_forged_and_missing_csrf_are_refused(page, engine, old)
    page.wait_for("!document.querySelector('#actions').hidden")
    page.click("#rebuild-force")
    wait_for_new_build(page, old)
    trail = page.wait_for("document.querySelector('#audit')?.textContent")
    assert "ada@example.com (proxy, from 127.0.0.1): rebuild --force made this build" in trail
    assert_page_healthy(page, expected="status of 401")

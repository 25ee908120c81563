"""Every answer carries the security headers: pages, their error pages (400, 404, 405, 503),
the router's own not-found and wrong-method answers, and the JSON, text and static answers.

CSP without inline code and with frame-ancestors 'none', nosniff, X-Frame-Options DENY and a
referrer policy that never sends a build URL to another origin."""

from __future__ import annotations

from pathlib import Path

import pytest
from starlette.testclient import TestClient

from service.rendering import static_url
from tests.reliability.security_support import forge_settings, serving
from tests.service.test_api import broken_engine, make_build

HTML_GETS = [
    "/",
    "/?status=nope",  # 400 page
    "/?before=x",
    "/builds/{id}",
    "/builds/999999",  # 404 page
    "/builds/x",
    "/repos/octo-org/social-score-api/history",
    "/repos/nobody/nothing/history",
    "/events?build=x",  # 400, as a page
]
# Not pages, but a browser may still be pointed at them: at least nosniff, no framing.
OTHER_ANSWERS = [
    ("GET", "/api/builds"),
    ("GET", "/api/builds/{id}"),
    ("GET", "/api/builds/999999"),
    ("GET", "/api/builds.csv"),
    ("GET", "/api/builds.json"),
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/metrics"),
    ("POST", "/webhooks/github"),  # 400/401 JSON
    ("POST", "/webhooks/svn"),  # unknown provider, 404 JSON
    ("POST", "/rebuild"),  # 401 JSON
    ("POST", "/api/builds/{id}/cancel"),  # 401 JSON
    ("GET", "/no/such/page"),  # the router's own 404
    ("GET", "/static/nope.js"),
    ("DELETE", "/"),  # the router's own 405
    ("GET", "/rebuild"),
    ("GET", "/webhooks/github"),
]


def assert_page_headers(response) -> None:
    headers = response.headers
    csp = headers.get("content-security-policy", "")
    assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp, response.url
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert "base-uri 'none'" in csp and "form-action 'self'" in csp
    assert headers.get("x-content-type-options") == "nosniff", response.url
    assert headers.get("x-frame-options") == "DENY", response.url
    assert headers.get("referrer-policy") in ("same-origin", "no-referrer"), response.url


@pytest.fixture
def site(tmp_path: Path, sqlite_url: str, sqlite_engine):
    settings = forge_settings(tmp_path, sqlite_url)
    build = make_build(sqlite_engine, status="succeeded")
    with serving(settings, sqlite_engine) as (client, _):
        yield client, build


def test_every_page_and_error_page_carries_the_security_headers(site):
    client, build = site
    seen = set()
    for path in HTML_GETS:
        response = client.get(path.format(id=build))
        assert response.headers["content-type"].startswith("text/html"), path
        assert_page_headers(response)
        seen.add(response.status_code)
    assert {200, 400, 404} <= seen


@pytest.mark.parametrize(("method", "path"), OTHER_ANSWERS)
def test_every_other_answer_carries_them_too(site, method: str, path: str):
    client, build = site
    response = client.request(method, path.format(id=build))
    assert_page_headers(response)


def test_static_files_carry_them(site):
    client, _ = site
    response = client.get(static_url("app.js"))
    assert response.status_code == 200
    assert_page_headers(response)


def test_pages_served_while_the_database_is_down_carry_them(
    tmp_path: Path, sqlite_url: str, make_settings
):
    from service.app import create_app
    from trainhook.runtime import build_runtime

    runtime = build_runtime(make_settings(sqlite_url), broken_engine(sqlite_url, tmp_path))
    with TestClient(create_app(runtime), raise_server_exceptions=False) as client:
        for path in ("/", "/builds/1", "/repos/octo-org/social-score-api/history"):
            response = client.get(path)
            assert response.status_code == 503, path
            assert_page_headers(response)
        for path in ("/api/builds", "/readyz"):
            assert_page_headers(client.get(path))


def test_an_unexpected_error_is_a_page_with_the_headers_and_no_details(
    tmp_path: Path, sqlite_url: str, sqlite_engine
):
    from service.app import create_app
    from trainhook.runtime import build_runtime

    app = create_app(build_runtime(forge_settings(tmp_path, sqlite_url), sqlite_engine))

    async def boom(request):  # a handler bug, as the app would meet it
        raise RuntimeError("password=hunter2 at /srv/secret/path")

    app.add_route("/boom", boom)
    with TestClient(app, raise_server_exceptions=False) as client:
        response = client.get("/boom")
    assert response.status_code == 500
    assert response.headers["content-type"].startswith("text/html")
    assert_page_headers(response)
    assert "hunter2" not in response.text and "/srv/secret" not in response.text

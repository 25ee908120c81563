"""Every payload-derived field is shown as text on every server-rendered page, without a
browser: repository name, ref, sha, commit message, author, pusher, delivery id, stage detail,
log text and error, carrying `<script>`, an attribute breakout (`"onerror=`), an `<img
onerror>` and a `javascript:` URL.

The builds arrive both through the real webhook routes (GitHub, GitLab, Gitea, Forgejo) and
as rows written by the functions the worker uses, then every page and error page is parsed
the way a browser tokenizer would: the only scripts are the page's own static files, no tag
comes from a payload, no attribute is an event handler, no link runs script."""

from __future__ import annotations

import json
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import quote

import pytest
from markupsafe import escape
from starlette.testclient import TestClient

from service.rendering import SCRIPTS, static_url
from tests.reliability.security_support import HOOK_SECRETS, KITS, forge_settings, serving
from tests.service.test_api import make_build

# One string carrying every kind of injection; a field is tagged so a leak names it.
INJECTION = '<script>alert(1)</script>"onerror="alert(2)\'><img src=x onerror=alert(3)>'
JS_URL = "javascript:alert(4)"
REPO_NAME = f"octo-org/x{INJECTION}"


def payload(field: str) -> str:
    return f"{field}:{INJECTION} {JS_URL}"


class Tokens(HTMLParser):
    """Start tags and their attributes as a browser's tokenizer sees them."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, {k: v or "" for k, v in attrs}))


def assert_inert(path: str, html: str) -> None:
    """Nothing from a payload became markup on this page."""
    assert INJECTION not in html, f"{path}: a payload is in the page unescaped"
    # The payload's own pieces, unescaped, would be markup: none may appear.
    for piece in ("<script>alert", "<img src=x", '"onerror="', "'><img"):
        assert piece not in html, f"{path}: {piece!r} unescaped"
    tokens = Tokens(html)
    scripts = [a.get("src", "") for t, a in tokens.tags if t == "script"]
    assert scripts == [static_url(s) for s in SCRIPTS], f"{path}: foreign script {scripts}"
    assert not [t for t, _ in tokens.tags if t in ("img", "iframe", "object", "embed", "base")]
    for tag, attrs in tokens.tags:
        handlers = [k for k in attrs if k.startswith("on")]
        assert not handlers, f"{path}: <{tag}> has event handler attributes {handlers}"
        for key in ("href", "src", "action", "formaction", "xlink:href"):
            value = attrs.get(key, "").strip().lower()
            assert not value.startswith(("javascript:", "data:text", "vbscript:")), (
                f"{path}: <{tag} {key}={value!r}>"
            )


def deliver(client: TestClient, provider: str, field_payloads: bool = True) -> int:
    """A push through the real route with a payload in every field the forge sends."""
    kit = KITS[provider]
    push = kit.push(
        ref=f"refs/heads/{payload('ref')}",
        repo=REPO_NAME,
        message=payload(f"{provider}-message"),
        author=payload(f"{provider}-author"),
    )
    if provider in ("gitea", "forgejo"):
        push.pop("head_commit", None)  # the author then comes from the pusher
        for commit in push.get("commits", []):
            commit.get("author", {})["name"] = ""
        push["pusher"] = {"full_name": payload(f"{provider}-pusher"), "login": "x"}
    body = json.dumps(push).encode()
    raw, headers = kit.sign(body, delivery=payload(f"{provider}-delivery")[:120],
                            secret=HOOK_SECRETS[provider])  # fmt: skip
    response = client.post(kit.url, content=raw, headers=headers)
    assert response.status_code == 202, response.text
    return int(response.json()["build_id"])


@pytest.fixture
def site(tmp_path: Path, sqlite_url: str, sqlite_engine):
    # The payload repository is configured (as an operator could name it) on every forge.
    settings = forge_settings(tmp_path, sqlite_url, name=REPO_NAME, branches=("*",))
    with serving(settings, sqlite_engine) as (client, _):
        yield client, sqlite_engine


def test_every_page_shows_every_payload_field_as_text(site):
    client, engine = site
    pushed = [deliver(client, provider) for provider in KITS]
    finished = make_build(
        engine,
        repo=REPO_NAME,
        ref=f"refs/heads/{payload('ref')}",
        sha=payload("sha"),
        message=payload("message"),
        author=payload("author"),
        status="failed",
        stages={
            "checkout": ("succeeded", payload("checkout-detail"), None),
            "hash": ("succeeded", f"data {payload('data')} · model: hit", None),
            "train": ("succeeded", f"reused from build #1 {payload('train')}", "hit"),
            "build": ("failed", f"image {JS_URL} {payload('build-detail')}", "miss"),
        },
        logs={"checkout": payload("log"), "build": payload("build-log")},
        error=payload("error"),
    )
    running = make_build(
        engine,
        repo=REPO_NAME,
        message=payload("running-message"),
        status="running",
        stages={"checkout": ("running", payload("running-detail"), None)},
    )
    builds = [*pushed, finished, running]
    q = quote(INJECTION, safe="")
    paths = [
        "/",
        f"/?repo={quote(REPO_NAME, safe='')}",
        f"/?branch={q}",
        f"/?status={q}",
        f"/?before={q}",
        f"/?limit={q}",
        *(f"/builds/{b}" for b in builds),
        f"/builds/{q}",
        f"/repos/{quote(REPO_NAME)}/history",
        f"/repos/{quote(REPO_NAME)}/history?n={q}",
        f"/repos/x{q}/history",
        f"/events?build={q}",
        f"/events?builds={q}",
    ]
    shown: dict[str, str] = {}
    for path in paths:
        response = client.get(path)
        if response.headers["content-type"].startswith("text/plain"):
            # The router's own not-found (the payload's "/" makes another path): plain text
            # that no browser may sniff into HTML.
            assert response.headers["x-content-type-options"] == "nosniff", path
            continue
        assert response.headers["content-type"].startswith("text/html"), path
        assert_inert(path, response.text)
        shown[path] = response.text
    everything = "\n".join(shown.values())
    # Shown, as text: the fields a reader needs are there, escaped.
    for field in ("ref", "message", "author", "checkout-detail", "log", "error", "github-message",
                  "gitea-pusher", "gitlab-author", "build-detail"):  # fmt: skip
        assert str(escape(payload(field))) in everything, field
    assert str(escape(REPO_NAME)) in shown[f"/repos/{quote(REPO_NAME)}/history"]


def test_the_page_checks_catch_an_unescaped_payload():
    # The control: the checks above fail on the page a missing escape would produce.
    for broken in (
        f"<p>{INJECTION}</p>",
        f'<a href="{JS_URL}">x</a>',
        '<p title="x" onmouseover="alert(1)">',
    ):
        page = "".join(f'<script src="{static_url(s)}"></script>' for s in SCRIPTS) + broken
        with pytest.raises(AssertionError):
            assert_inert("/control", page)

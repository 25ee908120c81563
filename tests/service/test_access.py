"""Who may see and do what: TRAINHOOK_DASHBOARD_ACCESS token and proxy (IAP JWT verified
against keys served locally), login cookies that hold no token, per-person tokens stored
hashed, CSRF on cookie and proxy writes, and an audit row for every write."""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from google.auth import crypt, jwt
from starlette.testclient import TestClient

from service import access
from service.app import create_app
from tests.service.forge_kits import GITHUB
from trainhook.apitokens import add_token, revoke_token
from trainhook.errors import ConfigError
from trainhook.models import api_tokens, audit_events
from trainhook.runtime import build_runtime

ADMIN = "test-token-0123456789"
READS = ("/", "/api/builds", "/api/builds.csv", "/api/builds.json", "/builds/1", "/events")
OPEN = ("/healthz", "/readyz", "/badge/octo-org/social-score-api.svg", "/login")
REBUILD = json.dumps({"repo": "octo-org/social-score-api", "sha": "a" * 40})
AUDIENCE = "/projects/123/global/backendServices/456"


@pytest.fixture
def serve(make_settings, sqlite_url: str):
    made: list[Any] = []

    def start(**env: str) -> tuple[TestClient, sa.Engine]:
        runtime = build_runtime(make_settings(sqlite_url, env=env))
        client = TestClient(create_app(runtime), base_url="https://testserver")
        client.__enter__()
        made.append((client, runtime))
        return client, runtime.engine

    yield start
    for client, runtime in made:
        client.__exit__(None, None, None)
        runtime.close()


def test_token_access_refuses_every_read_without_a_token_and_keeps_hooks_and_probes_open(serve):
    client, _ = serve(TRAINHOOK_DASHBOARD_ACCESS="token")
    for path in READS:
        answer = client.get(path, follow_redirects=False)
        assert answer.status_code == 401, path
        assert "build" not in answer.text.lower() or "sign in" in answer.text, path
    page = client.get("/", headers={"Accept": "text/html"}, follow_redirects=False)
    assert page.status_code == 303 and page.headers["location"] == "/login?next=/"
    assert page.headers["x-frame-options"] == "DENY"  # refusals get the security headers
    for path in OPEN:
        assert client.get(path).status_code == 200, path
    body, headers = GITHUB.sign(GITHUB.push())
    assert client.post(GITHUB.url, content=body, headers=headers).status_code == 202
    assert (
        client.get("/api/builds", headers={"Authorization": f"Bearer {ADMIN}"}).status_code == 200
    )


def test_a_login_cookie_holds_no_token_and_ends_when_the_token_is_revoked(serve):
    client, engine = serve(TRAINHOOK_DASHBOARD_ACCESS="token")
    token = add_token(engine, "ada", "read")
    with engine.connect() as conn:
        stored = conn.execute(sa.select(api_tokens)).one()
    assert token not in repr(tuple(stored))  # only its hash is kept
    wrong = client.post("/login", data={"token": token[:-1] + "x"}, follow_redirects=False)
    assert wrong.status_code == 401 and "trainhook_session" not in wrong.headers.get(
        "set-cookie", ""
    )
    answer = client.post("/login", data={"token": token, "next": "//evil.example/"},
                         follow_redirects=False)  # fmt: skip
    assert answer.status_code == 303 and answer.headers["location"] == "/"
    cookie = answer.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Secure" in cookie
    value = client.cookies["trainhook_session"]
    assert token not in value and token[4:20] not in value
    assert client.get("/api/builds").status_code == 200
    forged = value.rsplit(".", 1)[0] + "." + "0" * 64
    client.cookies.set("trainhook_session", forged)
    assert client.get("/api/builds").status_code == 401
    client.cookies.set("trainhook_session", value)
    revoke_token(engine, "ada")
    assert client.get("/api/builds").status_code == 401


def test_writes_take_person_tokens_refuse_read_tokens_and_are_audited(serve):
    client, engine = serve(TRAINHOOK_DASHBOARD_ACCESS="token")
    writer = add_token(engine, "grace", "write")
    reader = add_token(engine, "ada", "read")
    refused = client.post(
        "/rebuild", content=REBUILD, headers={"Authorization": f"Bearer {reader}"}
    )
    assert refused.status_code == 401
    made = client.post("/rebuild", content=REBUILD, headers={"Authorization": f"Bearer {writer}"})
    assert made.status_code == 202, made.text
    build_id = made.json()["build_id"]
    cancel = client.post(
        f"/api/builds/{build_id}/cancel", headers={"Authorization": f"Bearer {ADMIN}"}
    )
    assert cancel.status_code == 200
    with engine.connect() as conn:
        rows = conn.execute(sa.select(audit_events).order_by(audit_events.c.id)).all()
    assert [(r.action, r.actor, r.via, r.result_build_id, r.build_id) for r in rows] == [
        ("rebuild", "grace", "token", build_id, None),
        ("cancel", "admin", "admin", None, build_id),
    ]
    assert rows[0].remote == "testclient"


def test_a_cookie_write_needs_the_csrf_token(serve):
    client, engine = serve(TRAINHOOK_DASHBOARD_ACCESS="token")
    token = add_token(engine, "grace", "write")
    client.post("/login", data={"token": token}, follow_redirects=False)
    assert client.post("/rebuild", content=REBUILD).status_code == 401
    assert client.post("/rebuild", content=REBUILD,
                       headers={"X-CSRF-Token": "0" * 64}).status_code == 401  # fmt: skip
    gate = access.Gate(client.app.state.runtime.settings, engine)  # type: ignore[attr-defined]
    identity = gate.cookie(client.cookies["trainhook_session"])
    assert identity is not None and identity.name == "grace"
    csrf = gate.csrf_token(identity)
    answer = client.post("/rebuild", content=REBUILD, headers={"X-CSRF-Token": csrf or ""})
    assert answer.status_code == 202, answer.text


class Keys:
    """IAP's public keys, served over loopback HTTP as IAP serves them ({kid: PEM})."""

    def __init__(self) -> None:
        self.private = ec.generate_private_key(ec.SECP256R1())
        pem = self.private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        body = json.dumps({"kid-1": pem.decode()}).encode()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/public_key"

    def sign(self, **claims: Any) -> str:
        private = self.private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        signer = crypt.ES256Signer.from_string(private, key_id="kid-1")
        now = int(time.time())
        payload = {"iss": access.IAP_ISSUER, "aud": AUDIENCE, "iat": now, "exp": now + 600,
                   "email": "ada@example.org", "sub": "accounts.google.com:1"}  # fmt: skip
        payload.update(claims)
        return jwt.encode(signer, payload).decode()


@pytest.fixture
def keys(monkeypatch: pytest.MonkeyPatch) -> Iterator[Keys]:
    served = Keys()
    thread = threading.Thread(target=served.server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setattr(access, "IAP_CERTS_URL", served.url)
    yield served
    served.server.shutdown()
    served.server.server_close()


def test_proxy_access_trusts_only_a_verified_iap_jwt_and_audits_its_email(serve, keys: Keys):
    client, engine = serve(TRAINHOOK_DASHBOARD_ACCESS="proxy", TRAINHOOK_IAP_AUDIENCE=AUDIENCE)
    claimed = {"X-Goog-Authenticated-User-Email": "accounts.google.com:ada@example.org"}
    assert client.get("/api/builds", headers=claimed).status_code == 401
    for bad in (keys.sign(aud="/projects/123/other"), keys.sign(iss="https://evil"),
                keys.sign(exp=int(time.time()) - 3600), keys.sign()[:-4] + "AAAA"):  # fmt: skip
        answer = client.get("/api/builds", headers={**claimed, "X-Goog-IAP-JWT-Assertion": bad})
        assert answer.status_code == 401
    good = {**claimed, "X-Goog-IAP-JWT-Assertion": keys.sign()}
    assert client.get("/api/builds", headers=good).status_code == 200
    assert client.post("/rebuild", content=REBUILD, headers=good).status_code == 401  # no CSRF
    gate = access.Gate(client.app.state.runtime.settings, engine)  # type: ignore[attr-defined]
    csrf = gate.csrf_token(
        access.Identity("ada@example.org", "proxy", True, "proxy:ada@example.org")
    )
    made = client.post("/rebuild", content=REBUILD, headers={**good, "X-CSRF-Token": csrf or ""})
    assert made.status_code == 202, made.text
    with engine.connect() as conn:
        row = conn.execute(sa.select(audit_events)).one()
    assert (row.actor, row.via) == ("ada@example.org", "proxy")


def test_prod_refuses_public_unless_said_on_purpose(make_settings):
    prod = {"TRAINHOOK_ENV": "prod", "TRAINHOOK_DASHBOARD_ACCESS": "public"}
    url = "postgresql+psycopg://u@db/trainhook"
    with pytest.raises(ConfigError, match="TRAINHOOK_DASHBOARD_PUBLIC=1"):
        make_settings(url, env=prod)
    assert make_settings(url, env={**prod, "TRAINHOOK_DASHBOARD_PUBLIC": "1"}).dashboard_public
    assert make_settings(url, env={"TRAINHOOK_ENV": "prod"}).dashboard_access == "token"


def test_the_build_page_shows_who_made_and_who_cancelled_the_build(serve):
    client, engine = serve()
    writer = add_token(engine, "grace", "write")
    made = client.post("/rebuild", content=REBUILD, headers={"Authorization": f"Bearer {writer}"})
    build_id = made.json()["build_id"]
    client.post(f"/api/builds/{build_id}/cancel", headers={"Authorization": f"Bearer {ADMIN}"})
    page = client.get(f"/builds/{build_id}").text
    assert "grace (token, from testclient): rebuild made this build" in page
    assert "admin (admin, from testclient): cancel" in page
    assert writer not in page and ADMIN not in page


def csrf_in_page(html: str) -> str | None:
    found = re.search(r'data-csrf="([0-9a-f]+)"', html)
    return found.group(1) if found else None


def test_a_signed_in_writers_build_page_holds_the_csrf_token_its_writes_need(serve):
    client, engine = serve(TRAINHOOK_DASHBOARD_ACCESS="token")
    made = client.post("/rebuild", content=REBUILD, headers={"Authorization": f"Bearer {ADMIN}"})
    build_id = made.json()["build_id"]
    client.post("/login", data={"token": add_token(engine, "grace")}, follow_redirects=False)
    page = client.get(f"/builds/{build_id}")
    csrf = csrf_in_page(page.text)
    assert csrf and "Signed in as grace" in page.text and 'id="token"' not in page.text
    assert page.headers["cache-control"] == "no-store"  # bound to the session: never cached
    answer = client.post("/rebuild", content=REBUILD, headers={"X-CSRF-Token": csrf})
    assert answer.status_code == 202, answer.text
    client.cookies.clear()  # the page's token alone, without the session, is nothing
    assert client.post("/rebuild", content=REBUILD,
                       headers={"X-CSRF-Token": csrf}).status_code == 401  # fmt: skip


def test_a_read_only_session_or_a_bearer_reader_gets_no_csrf_token(serve):
    client, engine = serve(TRAINHOOK_DASHBOARD_ACCESS="token")
    made = client.post("/rebuild", content=REBUILD, headers={"Authorization": f"Bearer {ADMIN}"})
    build_id = made.json()["build_id"]
    reader = add_token(engine, "ada", "read")
    by_bearer = client.get(f"/builds/{build_id}", headers={"Authorization": f"Bearer {reader}"})
    assert csrf_in_page(by_bearer.text) is None and 'id="token"' in by_bearer.text
    client.post("/login", data={"token": reader}, follow_redirects=False)
    page = client.get(f"/builds/{build_id}").text
    assert csrf_in_page(page) is None and "Signed in as ada (read only)" in page


def test_a_proxy_users_build_page_holds_a_csrf_token_that_works_only_for_them(serve):
    client, _ = serve(TRAINHOOK_DASHBOARD_ACCESS="proxy")
    ada = {"X-Goog-Authenticated-User-Email": "accounts.google.com:ada@example.com"}
    bob = {"X-Goog-Authenticated-User-Email": "accounts.google.com:bob@example.com"}
    made = client.post("/rebuild", content=REBUILD, headers={"Authorization": f"Bearer {ADMIN}"})
    csrf = csrf_in_page(client.get(f"/builds/{made.json()['build_id']}", headers=ada).text)
    assert csrf
    assert client.post("/rebuild", content=REBUILD,
                       headers={**bob, "X-CSRF-Token": csrf}).status_code == 401  # fmt: skip
    answer = client.post("/rebuild", content=REBUILD, headers={**ada, "X-CSRF-Token": csrf})
    assert answer.status_code == 202, answer.text


def test_tokens_add_prints_the_token_once_and_stores_only_its_hash(
    make_settings, sqlite_url: str, monkeypatch: pytest.MonkeyPatch, capsys
):
    from trainhook import cli

    settings = make_settings(sqlite_url)
    monkeypatch.setenv("TRAINHOOK_CONFIG", str(settings.config_path))
    monkeypatch.setenv("TRAINHOOK_DATABASE_URL", sqlite_url)
    monkeypatch.setenv("TEST_WEBHOOK_SECRET", "s")
    assert cli.main(["tokens", "add", "grace"]) == 0
    token = capsys.readouterr().out.splitlines()[0]
    assert token.startswith("thk_") and len(token) > 40
    assert cli.main(["tokens", "list"]) == 0
    listed = capsys.readouterr().out
    assert "grace\twrite" in listed and token not in listed
    assert cli.main(["tokens", "add", "grace"]) == 1  # one live token per name
    engine = sa.create_engine(sqlite_url)
    with engine.connect() as conn:
        assert token not in repr(conn.execute(sa.select(api_tokens)).all())
    engine.dispose()

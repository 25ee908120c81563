"""Who may see the dashboard and who did a write action (TRAINHOOK_DASHBOARD_ACCESS).

- `public`: pages, API, events and exports are open; writes need a token.
- `token`: reads need a read or write token (`trainhook tokens add NAME`) or the admin
  token (TRAINHOOK_API_TOKEN), as a bearer header or as a login cookie from /login.
- `proxy`: an authenticating proxy (Google IAP) says who the user is in
  `X-Goog-Authenticated-User-Email`; with TRAINHOOK_IAP_AUDIENCE the signed
  `X-Goog-IAP-JWT-Assertion` is verified (issuer, audience, expiry, Google's keys) and its
  email is the identity, so a request that bypassed the proxy cannot claim anyone.

Webhooks, /healthz, /readyz, badges, static files and the login page stay reachable (the
write routes check their own credentials); /metrics too unless TRAINHOOK_METRICS_ACCESS is
`dashboard`.

A login cookie never holds a token: it is `<token id>.<expiry>.<HMAC>` keyed by a key the
replicas share (`service_keys`), so revoking the token ends its sessions. Writes carried by
an ambient credential (the cookie, the proxy's identity) also need the CSRF token the build
page holds (`X-CSRF-Token`), an HMAC of the session: another site can make the browser send
the cookie, never read the page. Every comparison of a credential is constant-time.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

import httpx
import sqlalchemy as sa
from google.auth import exceptions as google_exceptions
from google.auth import transport as google_transport
from google.oauth2 import id_token
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from trainhook import audit
from trainhook.apitokens import find_token, hash_token, holder_by_id
from trainhook.models import audit_events, service_keys, utcnow
from trainhook.runtime import Runtime
from trainhook.settings import Settings

COOKIE = "trainhook_session"
SESSION_SECONDS = 12 * 3600
IAP_CERTS_URL = "https://www.gstatic.com/iap/verify/public_key"
IAP_ISSUER = "https://cloud.google.com/iap"
EMAIL_HEADER = "x-goog-authenticated-user-email"
JWT_HEADER = "x-goog-iap-jwt-assertion"
OPEN_PREFIXES = ("/webhooks/", "/badge/", "/static/")
OPEN_PATHS = ("/healthz", "/readyz", "/login", "/logout", "/rebuild")
MAX_FORM = 8 * 1024


@dataclass(frozen=True)
class Identity:
    """Who sent a request: a token's name, `admin`, a proxy's user or `anonymous`."""

    name: str
    via: str  # public | admin | token | cookie | proxy
    can_write: bool = False
    session: str | None = None  # the ambient credential a CSRF token is bound to


ANONYMOUS = Identity("anonymous", "public")


def service_key(engine: Engine) -> bytes:
    """The key every replica signs cookies and CSRF tokens with: the first to need it makes
    it (insert if absent), then all read the same row."""
    with engine.begin() as conn:
        dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
        conn.execute(
            dialect.insert(service_keys)
            .values(name="session", value=secrets.token_hex(32), created_at=utcnow())
            .on_conflict_do_nothing(index_elements=[service_keys.c.name])
        )
        value = conn.execute(
            sa.select(service_keys.c.value).where(service_keys.c.name == "session")
        ).scalar_one()
    return bytes.fromhex(value)


def _mac(key: bytes, message: str) -> str:
    return hmac.new(key, message.encode(), hashlib.sha256).hexdigest()


class CachedCerts(google_transport.Request):
    """google-auth's transport for fetching IAP's public keys, over httpx, keeping an answer
    for five minutes: the keys change rarely and each request would otherwise fetch them."""

    def __init__(self) -> None:
        self.cache: dict[str, tuple[float, Any]] = {}

    def __call__(
        self,
        url: str,
        method: str = "GET",
        body: Any = None,
        headers: Any = None,
        timeout: Any = None,
        **kwargs: Any,
    ) -> Any:
        hit = self.cache.get(url)
        if hit is not None and hit[0] > time.monotonic():
            return hit[1]
        try:
            got = httpx.request(method, url, headers=headers, content=body, timeout=10.0)
        except httpx.HTTPError as exc:
            raise google_exceptions.TransportError(type(exc).__name__) from None
        answer = _Answer(got.status_code, dict(got.headers), got.content)
        if got.status_code == 200:
            self.cache[url] = (time.monotonic() + 300, answer)
        return answer


@dataclass(frozen=True)
class _Answer(google_transport.Response):
    _status: int
    _headers: dict[str, str]
    _data: bytes

    @property
    def status(self) -> int:
        return self._status

    @property
    def headers(self) -> dict[str, str]:
        return self._headers

    @property
    def data(self) -> bytes:
        return self._data


class Gate:
    """The checks, with what they need: settings, the database and the shared key."""

    def __init__(self, settings: Settings, engine: Engine) -> None:
        self.settings, self.engine = settings, engine
        self._key: bytes | None = None
        self.certs = CachedCerts()
        self.certs_url = IAP_CERTS_URL

    @property
    def key(self) -> bytes:
        if self._key is None:
            self._key = service_key(self.engine)
        return self._key

    def _admin_hash(self) -> str | None:
        admin = self.settings.api_token
        return hash_token(admin) if admin else None

    def bearer(self, header: str | None) -> Identity | None:
        """A bearer token: the admin token or a person's token."""
        if not header or not header.startswith("Bearer "):
            return None
        presented = header[len("Bearer ") :].strip()
        admin = self.settings.api_token
        if admin and hmac.compare_digest(presented.encode(), admin.encode()):
            return Identity("admin", "admin", can_write=True)
        with self.engine.connect() as conn:
            holder = find_token(conn, presented)
        if holder is None:
            return None
        return Identity(holder.name, "token", can_write=holder.scope == "write")

    def login(self, presented: str) -> str | None:
        """A session cookie value for a valid token, or None."""
        identity = self.bearer("Bearer " + presented)
        if identity is None:
            return None
        if identity.via == "admin":
            subject = "admin"
        else:
            with self.engine.connect() as conn:
                holder = find_token(conn, presented)
            if holder is None:
                return None
            subject = str(holder.id)
        expires = int(time.time()) + SESSION_SECONDS
        body = f"{subject}.{expires}"
        return f"{body}.{self._session_mac(subject, body)}"

    def _session_mac(self, subject: str, body: str) -> str | None:
        # The token's hash is part of the key: a revoked or rotated token ends its sessions.
        if subject == "admin":
            held = self._admin_hash()
        else:
            with self.engine.connect() as conn:
                holder = holder_by_id(conn, int(subject))
            held = holder.token_hash if holder else None
        return None if held is None else _mac(self.key, f"session:{held}:{body}")

    def cookie(self, value: str | None) -> Identity | None:
        if not value or value.count(".") != 2:
            return None
        subject, expires, mac = value.split(".")
        if not (subject == "admin" or subject.isdigit()) or not expires.isdigit():
            return None
        if int(expires) < time.time():
            return None
        wanted = self._session_mac(subject, f"{subject}.{expires}")
        if wanted is None or not hmac.compare_digest(mac.encode(), wanted.encode()):
            return None
        if subject == "admin":
            return Identity("admin", "cookie", can_write=True, session=value)
        with self.engine.connect() as conn:
            holder = holder_by_id(conn, int(subject))
        if holder is None:
            return None
        return Identity(holder.name, "cookie", holder.scope == "write", session=value)

    def proxy(self, headers: Any) -> Identity | None:
        """The proxy's user; with TRAINHOOK_IAP_AUDIENCE only from a verified IAP JWT."""
        email = str(headers.get(EMAIL_HEADER) or "").removeprefix("accounts.google.com:")
        audience = self.settings.iap_audience
        if audience:
            assertion = headers.get(JWT_HEADER)
            if not assertion:
                return None
            try:
                claims = id_token.verify_token(
                    assertion, self.certs, audience=audience, certs_url=self.certs_url
                )
            except (ValueError, google_exceptions.GoogleAuthError):
                return None
            if claims.get("iss") != IAP_ISSUER or not claims.get("email"):
                return None
            email = str(claims["email"])
        if not email:
            return None
        return Identity(email, "proxy", can_write=True, session="proxy:" + email)

    def reader(self, request: Request) -> Identity | None:
        """Who may read, by TRAINHOOK_DASHBOARD_ACCESS; None: nobody."""
        via_bearer = self.bearer(request.headers.get("authorization"))
        if via_bearer is not None:
            return via_bearer
        match self.settings.dashboard_access:
            case "public":
                return ANONYMOUS
            case "proxy":
                return self.proxy(request.headers)
            case _:
                return self.cookie(request.cookies.get(COOKIE))

    def csrf_token(self, identity: Identity) -> str | None:
        return _mac(self.key, "csrf:" + identity.session) if identity.session else None

    def writer(self, request: Request) -> Identity | None:
        """Who may write: a bearer write token, or (with its CSRF token) a write session."""
        identity = self.bearer(request.headers.get("authorization"))
        if identity is None and request.headers.get("authorization"):
            return None
        if identity is None:
            identity = self.reader(request)
            if identity is None or identity.session is None:
                return None
            wanted = self.csrf_token(identity) or ""
            sent = request.headers.get("x-csrf-token") or ""
            if not hmac.compare_digest(sent.encode(), wanted.encode()):
                return None
        return identity if identity.can_write else None


def gate(request: Request) -> Gate:
    app_gate: Gate | None = getattr(request.app.state, "gate", None)
    if app_gate is None:
        runtime: Runtime = request.app.state.runtime
        app_gate = Gate(runtime.settings, runtime.engine)
        request.app.state.gate = app_gate
    return app_gate


def is_open(settings: Settings, path: str) -> bool:
    if path in OPEN_PATHS or path.startswith(OPEN_PREFIXES):
        return True
    if path.startswith("/api/builds/") and path.endswith("/cancel"):
        return True  # a write route: it checks its own credentials
    return path == "/metrics" and settings.metrics_access == "public"


class AccessGate:
    """ASGI middleware refusing every dashboard request without read access."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        runtime: Runtime = request.app.state.runtime
        path = scope["path"]
        if runtime.settings.dashboard_access == "public" or is_open(runtime.settings, path):
            await self.app(scope, receive, send)
            return
        try:
            identity = await run_in_threadpool(gate(request).reader, request)
        except sa.exc.DBAPIError:
            response: Response = JSONResponse({"error": "database unavailable"}, 503)
            await response(scope, receive, send)
            return
        if identity is None:
            html = "text/html" in request.headers.get("accept", "") and request.method == "GET"
            if html and runtime.settings.dashboard_access != "proxy":
                response = RedirectResponse(f"/login?next={_safe_next(path)}", status_code=303)
            else:
                response = JSONResponse(
                    {"error": "sign in: a read token is needed"},
                    status_code=401,
                    headers={"WWW-Authenticate": "Bearer"},
                )
            await response(scope, receive, send)
            return
        scope.setdefault("state", {})["identity"] = identity
        await self.app(scope, receive, send)


def _safe_next(target: str | None) -> str:
    """Only a path on this site: `//host` or a scheme would send the user elsewhere."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


LOGIN_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Sign in · trainhook</title>
<link rel="stylesheet" href="/static/app.css"></head>
<body><main><h1>Sign in</h1>
<form class="card" method="post" action="/login">
<input type="hidden" name="next" value="{next}">
<label>Token <input type="password" name="token" autocomplete="off" required></label>
<button type="submit" class="primary">Sign in</button>
<p class="msg">{message}</p>
</form></main></body></html>"""


def _html_escape(text: str) -> str:
    return (
        text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")
    )


async def login_page(request: Request) -> Response:
    target = _safe_next(request.query_params.get("next"))
    return HTMLResponse(LOGIN_PAGE.format(next=_html_escape(target), message=""))


async def login(request: Request) -> Response:
    runtime: Runtime = request.app.state.runtime
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM:
            return HTMLResponse("form too large", status_code=413)
    form = parse_qs(body.decode("utf-8", "replace"))
    presented = (form.get("token") or [""])[0].strip()
    target = _safe_next((form.get("next") or ["/"])[0])
    value = await run_in_threadpool(gate(request).login, presented) if presented else None
    if value is None:
        page = LOGIN_PAGE.format(next=_html_escape(target), message="That token is not valid.")
        return HTMLResponse(page, status_code=401)
    response = RedirectResponse(target, status_code=303)
    secure = runtime.settings.public_url.startswith("https://") or request.url.scheme == "https"
    response.set_cookie(COOKIE, value, max_age=SESSION_SECONDS, httponly=True,
                        samesite="strict", secure=secure, path="/")  # fmt: skip
    return response


async def logout(request: Request) -> Response:
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(COOKIE, path="/")
    return response


def record(
    engine: Engine,
    identity: Identity,
    action: str,
    remote: str | None,
    *,
    build_id: int | None = None,
    result_build_id: int | None = None,
    detail: str | None = None,
) -> None:
    """One audit row: who did `action`, when, from where, to which build."""
    with engine.begin() as conn:
        audit.write(conn, audit.Actor(identity.name, identity.via, remote), action,
                    build_id=build_id, result_build_id=result_build_id, detail=detail)  # fmt: skip


def trail(conn: sa.Connection, build_id: int) -> list[dict[str, Any]]:
    """The audit rows about a build: actions on it and the action that made it."""
    rows = conn.execute(
        sa.select(audit_events)
        .where(sa.or_(audit_events.c.build_id == build_id,
                      audit_events.c.result_build_id == build_id))
        .order_by(audit_events.c.id)
    ).all()  # fmt: skip
    return [
        {"at": r.at, "action": r.action, "actor": r.actor, "via": r.via, "remote": r.remote,
         "made": r.result_build_id == build_id, "detail": r.detail}
        for r in rows
    ]  # fmt: skip


def unauthorised() -> JSONResponse:
    return JSONResponse(
        {"error": "missing or invalid bearer token (or CSRF token)"},
        status_code=401,
        headers={"WWW-Authenticate": "Bearer"},
    )


def as_json(identity: Identity) -> str:
    return json.dumps({"name": identity.name, "via": identity.via})


routes = [
    Route("/login", login_page, methods=["GET"]),
    Route("/login", login, methods=["POST"]),
    Route("/logout", logout, methods=["POST"]),
]

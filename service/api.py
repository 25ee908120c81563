"""GET /api/builds and /api/builds/{id}: the contract's JSON; also the parsing the pages share."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from service.details import pull_request_link
from trainhook.builds import TRIGGERS
from trainhook.buildview import (
    MAX_LIMIT,
    BuildPage,
    get_build,
    get_logs,
    get_logs_after,
    page_of_builds,
)
from trainhook.db import reading
from trainhook.errors import DatabaseUnavailable
from trainhook.runtime import Runtime

log = logging.getLogger(__name__)
T = TypeVar("T")

STATUSES = ("queued", "running", "succeeded", "failed", "cancelled", "superseded")
DEFAULT_LIMIT = 50
# Ids are int4 on Postgres: a larger literal would be a SQL error, and no such build can exist.
MAX_ID = 2**31 - 1

# Sent on every page and API answer. Scripts and styles come only from our own /static/ files
# (no inline code at all, so an injected tag or attribute could not run even if escaping failed);
# fetch and EventSource only to this origin; no frames, no plugins, no third-party origins.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
}


class ParamError(ValueError):
    """A query or path parameter is invalid; the message names it."""


@dataclass(frozen=True)
class BuildQuery:
    """Filters and keyset cursor of a build listing, validated."""

    repo: str | None = None
    status: str | None = None
    limit: int = DEFAULT_LIMIT
    before: int | None = None
    branch: str | None = None
    trigger: str | None = None


def _positive_int(name: str, raw: str) -> int:
    # Digits only: int() would also take " 7", "+7" and "7_0", none of which is a cursor we gave.
    if not raw.isascii() or not raw.isdigit() or int(raw) < 1:
        raise ParamError(f"parameter {name!r} must be a positive integer, got {raw!r}")
    return int(raw)


def parse_build_query(
    params: Mapping[str, str], default_limit: int = DEFAULT_LIMIT, max_limit: int = MAX_LIMIT
) -> BuildQuery:
    """Validate `repo`, `branch`, `status`, `trigger`, `limit` and `before`; empty means "not
    given"."""
    repo = params.get("repo") or None
    branch = params.get("branch") or None
    status = params.get("status") or None
    if status is not None and status not in STATUSES:
        raise ParamError(f"parameter 'status' must be one of {', '.join(STATUSES)}; got {status!r}")
    trigger = params.get("trigger") or None
    if trigger is not None and trigger not in TRIGGERS:
        raise ParamError(
            f"parameter 'trigger' must be one of {', '.join(TRIGGERS)}; got {trigger!r}"
        )
    raw_limit = params.get("limit") or ""
    limit = min(_positive_int("limit", raw_limit), max_limit) if raw_limit else default_limit
    raw_before = params.get("before") or ""
    before = _positive_int("before", raw_before) if raw_before else None
    if before is not None and before > MAX_ID:
        before = None  # past every possible id: the same as starting from the newest
    return BuildQuery(
        repo=repo, status=status, limit=limit, before=before, branch=branch, trigger=trigger
    )


def parse_build_id(raw: str) -> int | None:
    """The id in a build URL; None when it is well formed but cannot exist. Raises ParamError."""
    build_id = _positive_int("id", raw)
    return build_id if build_id <= MAX_ID else None


def _read(engine: Engine, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    try:
        with reading(engine) as conn:
            return fn(conn, *args, **kwargs)
    except (sa.exc.OperationalError, sa.exc.InterfaceError) as exc:
        # The driver's message can carry host and user names: it goes to the log, not the client.
        log.warning("database unavailable while reading builds: %s", type(exc).__name__)
        raise DatabaseUnavailable("database unavailable") from None


def read(engine: Engine, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    """`fn(conn, *args, **kwargs)` on a read-only connection. Raises DatabaseUnavailable."""
    return _read(engine, fn, *args, **kwargs)


def fetch_page(engine: Engine, query: BuildQuery) -> BuildPage:
    """One page of builds (two queries). Raises DatabaseUnavailable."""
    return _read(
        engine,
        page_of_builds,
        repo=query.repo,
        branch=query.branch,
        status=query.status,
        limit=query.limit,
        before=query.before,
        trigger=query.trigger,
    )


def fetch_builds(engine: Engine, query: BuildQuery) -> tuple[list[dict[str, Any]], int | None]:
    """One page of builds (two queries): (builds, next cursor). Raises DatabaseUnavailable."""
    page = fetch_page(engine, query)
    return page.builds, page.next


Loaded = tuple[dict[str, Any] | None, dict[str, str]]


def _build_and_logs(conn: sa.Connection, build_id: int) -> Loaded:
    build = get_build(conn, build_id)
    return build, (get_logs(conn, build_id) if build is not None else {})


def fetch_build(engine: Engine, build_id: int, *, logs: bool = False) -> Loaded:
    """(build or None, logs by stage — empty unless asked for). Raises DatabaseUnavailable."""
    if not logs:
        return _read(engine, get_build, build_id), {}
    return _read(engine, _build_and_logs, build_id)


def error_json(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=SECURITY_HEADERS)


def unavailable_json() -> JSONResponse:
    response = error_json(503, "database unavailable")
    response.headers["Retry-After"] = "5"
    return response


async def api_builds(request: Request) -> Response:
    runtime: Runtime = request.app.state.runtime
    try:
        query = parse_build_query(request.query_params)
    except ParamError as exc:
        return error_json(400, str(exc))
    try:
        items, cursor = await run_in_threadpool(fetch_builds, runtime.engine, query)
    except DatabaseUnavailable:
        return unavailable_json()
    for item in items:
        item["pull_request"] = pull_request_link(runtime.settings, item)
    # The cursor is opaque text to clients (today an id), so it can change shape later.
    body = {"builds": items, "next": None if cursor is None else str(cursor)}
    return JSONResponse(body, headers=SECURITY_HEADERS)


async def api_build(request: Request) -> Response:
    runtime: Runtime = request.app.state.runtime
    raw = request.path_params["id"]
    try:
        build_id = parse_build_id(raw)
    except ParamError as exc:
        return error_json(400, str(exc))
    build = None
    if build_id is not None:
        try:
            build, _ = await run_in_threadpool(fetch_build, runtime.engine, build_id)
        except DatabaseUnavailable:
            return unavailable_json()
    if build is None:
        return error_json(404, f"build {raw} not found")
    build["pull_request"] = pull_request_link(runtime.settings, build)
    return JSONResponse(build, headers=SECURITY_HEADERS)


def _logs_after(conn: sa.Connection, build_id: int, after: int) -> dict[str, Any] | None:
    build = get_build(conn, build_id)
    if build is None:
        return None
    logs, last = get_logs_after(conn, build_id, after)
    return {"status": build["status"], "logs": logs, "next": last}


async def api_build_logs(request: Request) -> Response:
    """GET /api/builds/{id}/logs?after=CURSOR: each stage's log text written after the
    cursor, and the cursor to ask with next (what `trainhook logs N --follow` polls)."""
    runtime: Runtime = request.app.state.runtime
    raw = request.path_params["id"]
    try:
        build_id = parse_build_id(raw)
        after = int(request.query_params.get("after") or 0)
    except (ParamError, ValueError) as exc:
        return error_json(400, f"bad build id or cursor: {exc}")
    body = None
    if build_id is not None:
        try:
            body = await run_in_threadpool(_read, runtime.engine, _logs_after, build_id, after)
        except DatabaseUnavailable:
            return unavailable_json()
    if body is None:
        return error_json(404, f"build {raw} not found")
    return JSONResponse(body, headers=SECURITY_HEADERS)


routes = [
    Route("/api/builds", api_builds, methods=["GET"]),
    Route("/api/builds/{id}", api_build, methods=["GET"]),
    Route("/api/builds/{id}/logs", api_build_logs, methods=["GET"]),
]

"""GET /api/builds.csv and /api/builds.json: the build list with the page's filters, streamed
page by page (keyset on id). CSV cells that a spreadsheet would run as a formula are defused."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from typing import Any

from sqlalchemy.engine import Engine
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from service.api import (
    SECURITY_HEADERS,
    BuildQuery,
    ParamError,
    error_json,
    fetch_page,
    unavailable_json,
)
from service.api import parse_build_query as parse
from service.details import cache_levels
from service.formatting import branch, first_line
from trainhook.builds import STAGES
from trainhook.errors import DatabaseUnavailable

DEFAULT_ROWS = 1000
MAX_ROWS = 100_000
PAGE = 200
# A cell starting with one of these is a formula (or becomes one) in Excel, LibreOffice and
# Google Sheets: "=HYPERLINK(...)", "+cmd|' /C calc'!A0", "@SUM(...)", or a tab/CR prefix.
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
COLUMNS = (
    "id", "repo", "branch", "ref", "sha", "trigger", "force", "status", "author", "message",
    "created_at", "started_at", "finished_at", "duration_s",
    "deps_cache", "nltk_cache", "model_cache", "failed_stage", "error",
    *(f"{stage}_s" for stage in STAGES),
)  # fmt: skip


def neutralise(value: Any) -> str:
    """The CSV text of a cell; one a spreadsheet would evaluate is prefixed with `'`."""
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(FORMULA_START) else text


def csv_row(build: dict[str, Any]) -> list[str]:
    levels = cache_levels(build)
    failed = next((s["name"] for s in build["stages"] if s["status"] == "failed"), None)
    durations = {s["name"]: s["duration_s"] for s in build["stages"]}
    values = [
        build["id"], build["repo"], branch(build["ref"]), build["ref"], build["sha"],
        build["trigger"], str(build["force"]).lower(), build["status"], build["author"],
        first_line(build["commit_message"]), build["created_at"], build["started_at"],
        build["finished_at"], build["duration_s"], levels.get("deps"), levels.get("nltk"),
        levels.get("model"), failed, first_line(build["error"]),
        *(durations.get(stage) for stage in STAGES),
    ]  # fmt: skip
    return [neutralise(v) for v in values]


def builds(engine: Engine, query: BuildQuery) -> Iterator[dict[str, Any]]:
    """Every build the filters match, newest first, up to `query.limit`, a page at a time."""
    left, before = query.limit, query.before
    while left > 0:
        page = fetch_page(
            engine,
            BuildQuery(query.repo, query.status, min(PAGE, left), before, query.branch),
        )
        yield from page.builds
        left -= len(page.builds)
        if page.next is None:
            return
        before = page.next


def _csv(engine: Engine, query: BuildQuery) -> Iterator[str]:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(COLUMNS)
    for build in builds(engine, query):
        writer.writerow(csv_row(build))
        if buffer.tell() > 64_000:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()


def _json(engine: Engine, query: BuildQuery) -> Iterator[str]:
    yield '{"builds": ['
    for i, build in enumerate(builds(engine, query)):
        yield ("," if i else "") + json.dumps(build)
    yield "]}"


async def export(request: Request, kind: str) -> Response:
    engine = request.app.state.runtime.engine
    try:
        query = parse(request.query_params, default_limit=DEFAULT_ROWS, max_limit=MAX_ROWS)
    except ParamError as exc:
        return error_json(400, str(exc))
    # The first page is read before answering, so a database outage is still a clean 503.
    probe = BuildQuery(query.repo, query.status, 1, query.before, query.branch)
    try:
        await run_in_threadpool(fetch_page, engine, probe)
    except DatabaseUnavailable:
        return unavailable_json()
    media = "text/csv; charset=utf-8" if kind == "csv" else "application/json"
    headers = {
        **SECURITY_HEADERS,
        "Content-Disposition": f'attachment; filename="builds.{kind}"',
        "Cache-Control": "no-store",
    }
    body = _csv(engine, query) if kind == "csv" else _json(engine, query)
    return StreamingResponse(body, media_type=media, headers=headers)


async def export_csv(request: Request) -> Response:
    return await export(request, "csv")


async def export_json(request: Request) -> Response:
    return await export(request, "json")


routes = [
    Route("/api/builds.csv", export_csv, methods=["GET"]),
    Route("/api/builds.json", export_json, methods=["GET"]),
]

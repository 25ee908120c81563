"""GET / and /builds/{id}: server-rendered HTML that is complete without JavaScript."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from jinja2 import Environment, FileSystemLoader, StrictUndefined
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from service.api import (
    DEFAULT_LIMIT,
    SECURITY_HEADERS,
    STATUSES,
    BuildQuery,
    ParamError,
    fetch_build,
    fetch_builds,
    parse_build_id,
    parse_build_query,
)
from trainhook.builds import STAGES, TERMINAL_BUILD
from trainhook.errors import DatabaseUnavailable
from trainhook.models import utcnow
from trainhook.runtime import Runtime

# Only the tail of a huge log is rendered: the page must stay small enough to reload every 3 s.
LOG_TAIL_CHARS = 256_000
REFRESH_SECONDS = 3


def branch(ref: str) -> str:
    """`refs/heads/main` -> `main`, `refs/tags/v1` -> `v1`; anything else unchanged."""
    for prefix in ("refs/heads/", "refs/tags/"):
        if ref.startswith(prefix):
            return ref[len(prefix) :]
    return ref


def first_line(text: str | None) -> str:
    return (text or "").strip().split("\n", 1)[0].strip()


def duration(seconds: float | None) -> str:
    """Human-sized duration: `0.42s`, `12s`, `3m 04s`, `1h 02m`; `—` when unknown."""
    if seconds is None:
        return "—"
    if seconds < 10:
        return f"{seconds:.2f}s" if seconds < 1 else f"{seconds:.1f}s"
    whole = round(seconds)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m {whole % 60:02d}s"
    return f"{whole // 3600}h {whole % 3600 // 60:02d}m"


def _parse(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


def when(value: str | None) -> str:
    """An ISO timestamp as `YYYY-MM-DD HH:MM:SS UTC`."""
    parsed = _parse(value)
    return "—" if parsed is None else parsed.strftime("%Y-%m-%d %H:%M:%S UTC")


def elapsed(build: dict[str, Any], now: datetime) -> float | None:
    """Total duration of a finished build; time since creation for one still in flight."""
    if build["duration_s"] is not None or build["status"] in TERMINAL_BUILD:
        return build["duration_s"]
    created = _parse(build["created_at"])
    return None if created is None else max(0.0, (now - created).total_seconds())


def stage_title(stage: dict[str, Any]) -> str:
    """The tooltip of a stage cell: name, status, duration and cache result."""
    parts = [f"{stage['name']}: {stage['status']}"]
    if stage["duration_s"] is not None and stage["status"] != "skipped":
        parts.append(duration(stage["duration_s"]))
    if stage["cache"]:
        parts.append(f"cache {stage['cache']}")
    return ", ".join(parts)


def waterfall(build: dict[str, Any], now: datetime) -> dict[str, tuple[float, float]]:
    """Per stage that started: (left %, width %) on a time axis from build creation to its end."""
    created = _parse(build["created_at"])
    if created is None:
        return {}
    end = _parse(build["finished_at"]) or now
    for stage in build["stages"]:
        end = max(end, _parse(stage["finished_at"]) or end)
    span = max((end - created).total_seconds(), 1e-3)
    bars = {}
    for stage in build["stages"]:
        start = _parse(stage["started_at"])
        if start is None:
            continue
        finish = _parse(stage["finished_at"]) or (now if stage["status"] == "running" else start)
        left = min(max((start - created).total_seconds() / span * 100, 0.0), 100.0)
        # A minimum width keeps instant stages (cache hits, skips) visible.
        width = max(min((finish - start).total_seconds() / span * 100, 100.0), 0.6)
        bars[stage["name"]] = (round(min(left, 100.0 - width), 2), round(width, 2))
    return bars


def page_url(query: BuildQuery, before: int | None) -> str:
    """The status page URL for these filters, starting `before` (None: the newest)."""
    params: dict[str, Any] = {"repo": query.repo, "status": query.status, "before": before}
    if query.limit != DEFAULT_LIMIT:
        params["limit"] = query.limit
    pairs = {k: v for k, v in params.items() if v is not None}
    return "/?" + urlencode(pairs) if pairs else "/"


env = Environment(
    loader=FileSystemLoader(Path(__file__).parent / "templates"),
    # Forced on for every template, whatever its file name: all page values come from payloads.
    autoescape=True,
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
env.filters.update(
    branch=branch, first_line=first_line, duration=duration, when=when, stage_title=stage_title
)
env.globals.update(
    STATUSES=STATUSES, STAGES=STAGES, TERMINAL=TERMINAL_BUILD, REFRESH_SECONDS=REFRESH_SECONDS
)


def render(name: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    """Render a template with the security headers every page carries."""
    html = env.get_template(name).render(**context)
    return HTMLResponse(html, status_code=status_code, headers=SECURITY_HEADERS)


def error_page(status_code: int, title: str, message: str) -> HTMLResponse:
    response = render("error.html", status_code, title=title, message=message)
    if status_code == 503:
        response.headers["Retry-After"] = "5"
    return response


def _unavailable() -> HTMLResponse:
    return error_page(503, "Database unavailable", "The build database cannot be reached.")


async def index(request: Request) -> Response:
    runtime: Runtime = request.app.state.runtime
    try:
        query = parse_build_query(request.query_params)
    except ParamError as exc:
        return error_page(400, "Bad request", str(exc))
    try:
        items, cursor = await run_in_threadpool(fetch_builds, runtime.engine, query)
    except DatabaseUnavailable:
        return _unavailable()
    now = utcnow()
    return render(
        "index.html",
        builds=items,
        elapsed={b["id"]: elapsed(b, now) for b in items},
        query=query,
        older_url=page_url(query, cursor) if cursor is not None else None,
        newest_url=page_url(query, None) if query.before is not None else None,
        refresh=any(b["status"] not in TERMINAL_BUILD for b in items),
    )


def _log_views(logs: dict[str, str], stages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    failed = {s["name"] for s in stages if s["status"] == "failed"}
    names = [s for s in STAGES if s in logs] + sorted(set(logs) - set(STAGES))
    views = []
    for name in names:
        text = logs[name]
        views.append(
            {
                "stage": name,
                # The failed stage's log is what a reader came for: open it.
                "open": name in failed,
                "text": text[-LOG_TAIL_CHARS:],
                "total": len(text),
                "truncated": len(text) > LOG_TAIL_CHARS,
                "lines": text.count("\n") + (0 if text.endswith("\n") else 1),
            }
        )
    return views


async def build_page(request: Request) -> Response:
    runtime: Runtime = request.app.state.runtime
    raw = request.path_params["id"]
    try:
        build_id = parse_build_id(raw)
    except ParamError as exc:
        # A malformed id is the client's mistake (400); a well-formed unknown id is a 404.
        return error_page(400, "Bad request", str(exc))
    build: dict[str, Any] | None = None
    logs: dict[str, str] = {}
    if build_id is not None:
        try:
            build, logs = await run_in_threadpool(fetch_build, runtime.engine, build_id, logs=True)
        except DatabaseUnavailable:
            return _unavailable()
    if build is None:
        return error_page(404, "Build not found", f"There is no build {raw}.")
    now = utcnow()
    return render(
        "build.html",
        build=build,
        total=elapsed(build, now),
        bars=waterfall(build, now),
        logs=_log_views(logs, build["stages"]),
        refresh=build["status"] not in TERMINAL_BUILD,
    )


routes = [
    Route("/", index, methods=["GET"]),
    Route("/builds/{id}", build_page, methods=["GET"]),
]

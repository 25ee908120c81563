"""GET / and /builds/{id}: server-rendered HTML, complete without JavaScript; the page script
(static/app.js) keeps them live over /events."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

import sqlalchemy as sa
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from service import stats
from service.access import Identity, gate, trail
from service.api import (
    DEFAULT_LIMIT,
    BuildQuery,
    ParamError,
    fetch_page,
    parse_build_id,
    parse_build_query,
    read,
)
from service.charts import waterfall
from service.details import (
    cache_levels,
    cloud_build_log,
    commit_url,
    pull_request_link,
    release_link,
    stage_facts,
)
from service.formatting import branch, duration, elapsed, first_line, stage_title, when
from service.history import WINDOW, summarise
from service.rendering import env, error_page, render, unavailable
from trainhook.builds import STAGES, TERMINAL_BUILD, TRIGGERS
from trainhook.buildview import get_logs_after, load_build, recent_finished
from trainhook.errors import DatabaseUnavailable
from trainhook.models import stage_events, utcnow
from trainhook.runtime import Runtime

__all__ = ["branch", "duration", "env", "first_line", "routes", "stage_title", "when"]

# Only the tail of a huge log is rendered: the page must stay small enough to reload every 3 s.
LOG_TAIL_CHARS = 256_000


def _query_string(params: dict[str, Any]) -> str:
    pairs = {k: v for k, v in params.items() if v is not None}
    return "?" + urlencode(pairs) if pairs else ""


def page_url(query: BuildQuery, before: int | None) -> str:
    """The status page URL for these filters, starting `before` (None: the newest)."""
    params: dict[str, Any] = {
        "repo": query.repo,
        "branch": query.branch,
        "status": query.status,
        "trigger": query.trigger,
        "before": before,
    }
    if query.limit != DEFAULT_LIMIT:
        params["limit"] = query.limit
    return "/" + _query_string(params)


def export_query(query: BuildQuery) -> str:
    """The query string of the CSV/JSON export of every build these filters match."""
    return _query_string(
        {"repo": query.repo, "branch": query.branch, "status": query.status,
         "trigger": query.trigger}
    )  # fmt: skip


async def index(request: Request) -> Response:
    runtime: Runtime = request.app.state.runtime
    try:
        query = parse_build_query(request.query_params)
    except ParamError as exc:
        return error_page(400, "Bad request", str(exc))
    try:
        page = await run_in_threadpool(fetch_page, runtime.engine, query)
    except DatabaseUnavailable:
        return unavailable()
    now = utcnow()
    items = page.builds
    return render(
        "index.html",
        builds=items,
        elapsed={b["id"]: elapsed(b, now) for b in items},
        levels={b["id"]: cache_levels(b) for b in items},
        pulls={b["id"]: pull_request_link(runtime.settings, b) for b in items},
        triggers=TRIGGERS,
        query=query,
        export_query=export_query(query),
        repos=[r.name for r in runtime.settings.repos],
        older_url=page_url(query, page.next) if page.next is not None else None,
        newest_url=page_url(query, None) if query.before is not None else None,
        refresh=any(b["status"] not in TERMINAL_BUILD for b in items),
        since=page.last_event_id,
        # Only the newest page announces new builds; an older page never gains rows.
        top=(items[0]["id"] if items else 0) if query.before is None else None,
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


def _cloud_build_record(conn: sa.Connection, build_id: int) -> str | None:
    """The detail of the Cloud Build builder's latest record of this build's Cloud Build: a
    later event of the stage replaces the folded detail, and the log link lives only here."""
    return conn.execute(
        sa.select(stage_events.c.detail)
        .where(
            stage_events.c.build_id == build_id,
            stage_events.c.stage == "build",
            stage_events.c.status == "pending",
        )
        .order_by(stage_events.c.id.desc())
        .limit(1)
    ).scalar()


def _build_view(conn: sa.Connection, build_id: int) -> dict[str, Any] | None:
    """Everything the build page shows, read on one connection (four queries; six with
    the repository's history)."""
    build, last_event = load_build(conn, build_id)
    if build is None:
        return None
    logs, last_log = get_logs_after(conn, build_id)
    record = _cloud_build_record(conn, build_id)
    # History only matters for an ETA (in flight) or for the time a cache hit saved.
    train = build["stages"][STAGES.index("train")]
    wanted = build["status"] not in TERMINAL_BUILD or train["cache"] == "hit"
    history = recent_finished(conn, build["repo"], WINDOW) if wanted else []
    return {
        "build": build,
        "since": f"{last_event}.{last_log}",
        "logs": logs,
        "history": history,
        "cloud_build_log": cloud_build_log("build", "pending", record),
        "trail": trail(conn, build_id),
    }


async def build_page(request: Request) -> Response:
    runtime: Runtime = request.app.state.runtime
    raw = request.path_params["id"]
    try:
        build_id = parse_build_id(raw)
    except ParamError as exc:
        # A malformed id is the client's mistake (400); a well-formed unknown id is a 404.
        return error_page(400, "Bad request", str(exc))
    view: dict[str, Any] | None = None
    if build_id is not None:
        try:
            view = await run_in_threadpool(read, runtime.engine, _build_view, build_id)
        except DatabaseUnavailable:
            return unavailable()
    if view is None:
        return error_page(404, "Build not found", f"There is no build {raw}.")
    session = await _session_actions(request)
    build, now = view["build"], utcnow()
    summary = summarise([b for b in view["history"] if b["id"] != build["id"]])
    medians = dict(summary.medians)
    if build["force"] and summary.miss_median is not None:
        medians["train"] = summary.miss_median  # forced: it will train, not hit the cache
    repo = runtime.settings.repo(build["repo"], build["provider"])
    live = build["status"] not in TERMINAL_BUILD
    facts = {s["name"]: stage_facts(s) for s in build["stages"]}
    if (log := view["cloud_build_log"]) and log not in facts["build"]:
        facts["build"].append(log)
    response = render(
        "build.html",
        build=build,
        total=elapsed(build, now),
        chart=waterfall(build, now, medians if live else None),
        facts=facts,
        levels=cache_levels(build),
        logs=_log_views(view["logs"], build["stages"]),
        since=view["since"],
        eta=stats.eta_seconds(build, medians, now) if live else None,
        saved=stats.saved_seconds(build, summary.miss_median),
        miss_median=summary.miss_median,
        commit=commit_url(repo.clone_url if repo else None, build["provider"], build["sha"]),
        pull=pull_request_link(runtime.settings, build),
        release=release_link(runtime.settings, build),
        configured=repo is not None,
        refresh=live,
        trail=view["trail"],
        who=session[0],
        csrf=session[1],
    )
    if session[1]:
        # The page holds a CSRF token bound to this session: no cache may keep it.
        response.headers["Cache-Control"] = "no-store"
    return response


async def _session_actions(request: Request) -> tuple[str | None, str | None]:
    """(who is signed in, the CSRF token their writes send): for a cookie or proxy session
    only. The buttons then ride on that session; a bearer reader or `public` access types a
    token instead. A read-only session gets its name and no CSRF token."""
    identity: Identity | None = request.scope.get("state", {}).get("identity")
    if identity is None or identity.session is None:
        return None, None
    if not identity.can_write:
        return identity.name, None
    # In a thread: the first use of the shared key reads (or makes) its row.
    return identity.name, await run_in_threadpool(gate(request).csrf_token, identity)


routes = [
    Route("/", index, methods=["GET"]),
    Route("/builds/{id}", build_page, methods=["GET"]),
]

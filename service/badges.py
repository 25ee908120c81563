"""GET /badge/{repo}.svg?branch=&metric=: a README badge, the status of a branch's last
finished build or (`metric=macro_f1`) the deployed model's score.

A badge is fetched by image proxies (GitHub's camo) that send no credentials, so it stays
reachable whatever TRAINHOOK_DASHBOARD_ACCESS says; it shows one word or number about a
configured repository and nothing else. Answers are cacheable for CACHE_SECONDS: a proxy
may show a result that much late, and a busy README costs one query a minute.
"""

from __future__ import annotations

import re
from xml.sax.saxutils import escape

import sqlalchemy as sa
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from service.api import read
from trainhook.buildview import branch_ref
from trainhook.errors import DatabaseUnavailable
from trainhook.models import builds, stage_events
from trainhook.repos import RepoConfig
from trainhook.runtime import Runtime

CACHE_SECONDS = 60
METRICS = ("macro_f1",)
COLOURS = {"passing": "#2e7d32", "failing": "#c62828", "unknown": "#757575", "score": "#1565c0"}
F1 = re.compile(r"macro F1 ([0-9]+(?:\.[0-9]+)?)")


def _width(text: str) -> int:
    # Verdana 11px averages about 7px a character; a little room on each side.
    return 7 * len(text) + 12


def render_svg(label: str, value: str, colour: str) -> str:
    """A flat two-part badge, valid standalone SVG with an accessible name."""
    left, right = _width(label), _width(value)
    total = left + right
    title = escape(f"{label}: {value}")
    lab, val = escape(label), escape(value)
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{total}" height="20" role="img" '
        f'aria-label="{title}" viewBox="0 0 {total} 20">'
        f"<title>{title}</title>"
        f'<rect width="{left}" height="20" fill="#555"/>'
        f'<rect x="{left}" width="{right}" height="20" fill="{colour}"/>'
        '<g fill="#fff" text-anchor="middle" font-family="Verdana,DejaVu Sans,sans-serif" '
        'font-size="11">'
        f'<text x="{left / 2}" y="14">{lab}</text>'
        f'<text x="{left + right / 2}" y="14">{val}</text>'
        "</g></svg>"
    )


def _default_branch(repo: RepoConfig) -> str:
    literal = [b for b in repo.branches if not any(c in b for c in "*?[")]
    return literal[0] if literal else "main"


def branch_status(conn: sa.Connection, repo: RepoConfig, branch: str) -> str:
    """passing | failing | unknown: the branch's last build that succeeded or failed (a
    cancelled or superseded build says nothing about the code)."""
    status = conn.execute(
        sa.select(builds.c.status)
        .where(
            builds.c.provider == repo.provider,
            builds.c.repo == repo.name,
            builds.c.ref == branch_ref(branch),
            builds.c.status.in_(("succeeded", "failed")),
        )
        .order_by(builds.c.id.desc())
        .limit(1)
    ).scalar()
    return {"succeeded": "passing", "failed": "failing"}.get(status or "", "unknown")


def deployed_f1(conn: sa.Connection, repo: RepoConfig, branch: str) -> str | None:
    """The macro F1 of the model the branch's newest succeeded build deployed (its train
    stage says it, trained or reused); None when nothing was deployed."""
    deployed = (
        sa.select(stage_events.c.id)
        .where(
            stage_events.c.build_id == builds.c.id,
            stage_events.c.stage == "deploy",
            stage_events.c.status == "succeeded",
        )
        .exists()
    )
    build_id = conn.execute(
        sa.select(builds.c.id)
        .where(
            builds.c.provider == repo.provider,
            builds.c.repo == repo.name,
            builds.c.ref == branch_ref(branch),
            builds.c.status == "succeeded",
            deployed,
        )
        .order_by(builds.c.id.desc())
        .limit(1)
    ).scalar()
    if build_id is None:
        return None
    details = conn.execute(
        sa.select(stage_events.c.detail)
        .where(stage_events.c.build_id == build_id, stage_events.c.stage == "train")
        .order_by(stage_events.c.id.desc())
    ).scalars()
    for detail in details:
        if detail and (match := F1.search(detail)):
            return f"{float(match.group(1)):.3f}"
    return None


def _svg(body: str, status: int = 200) -> Response:
    return Response(
        body,
        status_code=status,
        media_type="image/svg+xml",
        headers={"Cache-Control": f"public, max-age={CACHE_SECONDS}"},
    )


async def badge(request: Request) -> Response:
    runtime: Runtime = request.app.state.runtime
    name = request.path_params["repo"]
    repo = runtime.settings.repo(name)
    if repo is None:
        # Only configured repositories: the route never says what else exists.
        return Response("repository not configured\n", status_code=404, media_type="text/plain")
    branch = request.query_params.get("branch") or _default_branch(repo)
    metric = request.query_params.get("metric") or None
    if metric is not None and metric not in METRICS:
        expected = ", ".join(METRICS)
        return Response(
            f"parameter 'metric' must be one of {expected}\n", 400, media_type="text/plain"
        )
    try:
        if metric is None:
            status = await run_in_threadpool(read, runtime.engine, branch_status, repo, branch)
            return _svg(render_svg("trainhook", status, COLOURS[status]))
        score = await run_in_threadpool(read, runtime.engine, deployed_f1, repo, branch)
    except DatabaseUnavailable:
        # Not cached: the next view should show the real state.
        body = render_svg("trainhook", "unavailable", COLOURS["unknown"])
        return Response(body, 503, media_type="image/svg+xml",
                        headers={"Cache-Control": "no-store"})  # fmt: skip
    colour = COLOURS["score" if score else "unknown"]
    return _svg(render_svg("macro F1", score or "none", colour))


routes = [Route("/badge/{repo:path}.svg", badge, methods=["GET"])]

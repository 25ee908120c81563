"""GET /repos/{name}/history: per-stage median and p90 over the last N builds, a chart of total
duration, ETAs of builds in flight, and the time the model cache saved."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from service import stats
from service.api import ParamError, read
from service.charts import history_chart
from service.details import cache_levels
from service.formatting import elapsed
from service.rendering import error_page, render, unavailable
from trainhook.buildview import page_of_builds, recent_finished
from trainhook.errors import DatabaseUnavailable
from trainhook.models import utcnow
from trainhook.runtime import Runtime

WINDOW = 50
MAX_WINDOW = 500


@dataclass
class Summary:
    """What a repository's history says, computed from its last finished builds."""

    builds: list[dict[str, Any]]
    stages: list[stats.StageStat]
    medians: dict[str, float | None]
    miss_median: float | None
    saved: dict[int, float]

    @property
    def saved_total(self) -> float:
        return sum(self.saved.values())


def summarise(builds: list[dict[str, Any]]) -> Summary:
    ok = [b for b in builds if b["status"] == "succeeded"]
    stage_stats = stats.stage_stats(ok)
    miss = stats.miss_train_median(builds)
    saved = {b["id"]: s for b in ok if (s := stats.saved_seconds(b, miss)) is not None}
    return Summary(builds, stage_stats, {s.name: s.median for s in stage_stats}, miss, saved)


def _load(conn: sa.Connection, repo: str, window: int) -> tuple[list[Any], list[Any]]:
    finished = recent_finished(conn, repo, window)
    live = [b for b in page_of_builds(conn, repo=repo, limit=20).builds if not b["finished_at"]]
    return finished, live


def parse_window(raw: str | None) -> int:
    if not raw:
        return WINDOW
    if not raw.isascii() or not raw.isdigit() or not 1 <= int(raw) <= MAX_WINDOW:
        raise ParamError(f"parameter 'n' must be an integer from 1 to {MAX_WINDOW}, got {raw!r}")
    return int(raw)


async def history_page(request: Request) -> Response:
    runtime: Runtime = request.app.state.runtime
    repo = request.path_params["name"]
    try:
        window = parse_window(request.query_params.get("n"))
    except ParamError as exc:
        return error_page(400, "Bad request", str(exc))
    try:
        finished, live = await run_in_threadpool(read, runtime.engine, _load, repo, window)
    except DatabaseUnavailable:
        return unavailable()
    if not finished and not live and runtime.settings.repo(repo) is None:
        return error_page(404, "Repository not found", f"No builds of {repo} and not configured.")
    summary = summarise(finished)
    now = utcnow()
    totals = stats.totals(finished)
    caches = {b["id"]: cache_levels(b).get("model") for b in finished}
    return render(
        "history.html",
        repo=repo,
        window=window,
        summary=summary,
        total_median=stats.percentile(totals, 0.5),
        total_p90=stats.percentile(totals, 0.9),
        succeeded=sum(1 for b in finished if b["status"] == "succeeded"),
        chart=history_chart(finished, caches, stats.percentile(totals, 0.5)),
        kinds=stats.compare_kinds(finished),
        kind_of=stats.classify(finished),
        hits=[b for b in finished if b["id"] in summary.saved],
        live=[(b, elapsed(b, now), stats.eta_seconds(b, summary.medians, now)) for b in live],
        refresh=bool(live),
    )


routes = [Route("/repos/{name:path}/history", history_page, methods=["GET"])]

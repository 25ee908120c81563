"""POST /api/builds/{id}/cancel: stop a queued or running build, behind the /rebuild token."""

from __future__ import annotations

import sqlalchemy as sa
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from service import access
from service.api import SECURITY_HEADERS, ParamError, error_json, parse_build_id
from trainhook.builds import cancel_build
from trainhook.errors import DatabaseUnavailable
from trainhook.runtime import Runtime

REASON = "cancelled from the status page or API"


def _cancel(runtime: Runtime, build_id: int) -> str | None:
    try:
        with runtime.engine.begin() as conn:
            return cancel_build(conn, build_id, REASON)
    except sa.exc.DBAPIError:
        raise DatabaseUnavailable("database unavailable; nothing was cancelled") from None


async def cancel(request: Request) -> Response:
    runtime: Runtime = request.app.state.runtime
    who = await run_in_threadpool(access.gate(request).writer, request)
    if who is None:
        if not runtime.settings.api_token:
            return error_json(503, "not configured: set TRAINHOOK_API_TOKEN to enable actions")
        return access.unauthorised()
    raw = request.path_params["id"]
    try:
        build_id = parse_build_id(raw)
    except ParamError as exc:
        return error_json(400, str(exc))
    try:
        outcome = None if build_id is None else await run_in_threadpool(_cancel, runtime, build_id)
    except DatabaseUnavailable as exc:
        response = error_json(503, str(exc))
        response.headers["Retry-After"] = "5"
        return response
    if outcome is None:
        return error_json(404, f"build {raw} not found")
    if outcome != "cancelled":
        return error_json(409, f"build {raw} already {outcome}; nothing to cancel")
    runtime.metrics.builds.labels(status="cancelled").inc()
    remote = request.client.host if request.client else None
    await run_in_threadpool(access.record, runtime.engine, who, "cancel", remote, build_id=build_id)
    body = {"status": "cancelled", "build_id": build_id, "status_url": f"/builds/{build_id}"}
    return JSONResponse(body, headers=SECURITY_HEADERS)


routes = [Route("/api/builds/{id}/cancel", cancel, methods=["POST"])]

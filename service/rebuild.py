"""POST /rebuild: a build by hand, behind a bearer token compared in constant time."""

from __future__ import annotations

import hmac
import json

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from service import access
from service.forges import WebhookError
from service.webhooks import read_body
from trainhook.errors import DatabaseUnavailable
from trainhook.runtime import Runtime
from trainhook.triggers import TriggerError, request_rebuild

MAX_BODY = 64 * 1024


def authorised(header: str | None, token: str) -> bool:
    """True when `Authorization: Bearer <token>` carries the configured token."""
    if not header or not header.startswith("Bearer "):
        return False
    return hmac.compare_digest(header[len("Bearer ") :].strip().encode(), token.encode())


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


async def rebuild(request: Request) -> JSONResponse:
    runtime: Runtime = request.app.state.runtime
    # The admin token, a person's write token, or a write session with its CSRF token.
    who = await run_in_threadpool(access.gate(request).writer, request)
    if who is None:
        if not runtime.settings.api_token:
            return _error(503, "not configured: set TRAINHOOK_API_TOKEN to enable /rebuild")
        return access.unauthorised()
    try:
        # Read no further than the limit (a body is never buffered whole before the check).
        body = await read_body(request, MAX_BODY, runtime.settings.body_timeout)
    except WebhookError as exc:  # too large or too slow: the rest is not worth reading
        return JSONResponse(
            {"error": exc.message}, status_code=exc.status, headers={"Connection": "close"}
        )
    try:
        data = json.loads(body)
    except ValueError:
        return _error(400, "body is not valid JSON")
    if not isinstance(data, dict):
        return _error(400, "body must be a JSON object")
    unknown = sorted(set(data) - {"repo", "ref", "sha", "force"})
    if unknown:
        return _error(400, f"unknown field {unknown[0]!r}")
    repo, ref, sha, force = (data.get(k) for k in ("repo", "ref", "sha", "force"))
    if not isinstance(repo, str) or not repo:
        return _error(400, "missing field 'repo'")
    for name, value in (("ref", ref), ("sha", sha)):
        if value is not None and not isinstance(value, str):
            return _error(400, f"field {name!r} must be a string")
    if force is not None and not isinstance(force, bool):
        return _error(400, "field 'force' must be true or false")
    try:
        build_id = await run_in_threadpool(
            request_rebuild, runtime, repo, ref=ref, sha=sha, force=bool(force)
        )
    except TriggerError as exc:
        return _error(exc.status, exc.message)
    except DatabaseUnavailable as exc:
        return _error(503, str(exc))
    action = "rebuild --force" if force else "rebuild"
    detail = f"sha {sha}" if sha else f"ref {ref or 'default branch'}"
    remote = request.client.host if request.client else None
    await run_in_threadpool(access.record, runtime.engine, who, action, remote,
                            result_build_id=build_id, detail=f"{repo} {detail}")  # fmt: skip
    return JSONResponse(
        {"status": "queued", "build_id": build_id, "status_url": f"/builds/{build_id}"},
        status_code=202,
    )


routes = [Route("/rebuild", rebuild, methods=["POST"])]

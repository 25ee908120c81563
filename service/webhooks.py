"""POST /webhooks/{provider}: read the body within its limit and answer as the contract says."""

from __future__ import annotations

import asyncio
import time

from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from service import ingest
from service.forges import TooLarge, WebhookError
from service.forges.registry import FORGES
from trainhook.errors import DatabaseUnavailable
from trainhook.models import utcnow
from trainhook.runtime import Runtime

# The route picks the verifier (FORGES): a header naming another forge never changes which
# one runs. Each route serves the repositories configured with the provider of the same name.


class TooSlow(WebhookError):
    status = 408


def declared_over(declared: str | None, limit: int) -> bool:
    """True when a Content-Length header declares more than `limit` bytes.

    Only ASCII digits make a number: '²'.isdigit() is true but int() refuses it, and int()
    refuses more than 4,300 digits; either would end in a 500. Anything else is no
    declaration at all: the body is then counted as it is read.
    """
    if declared is None or not declared.isascii() or not declared.isdigit():
        return False
    digits = declared.lstrip("0")
    return len(digits) > len(str(limit)) or int(digits or "0") > limit


async def read_body(request: Request, limit: int, timeout: float | None = None) -> bytes:
    """The raw body, refusing more than `limit` bytes without reading past it, and a body
    that takes over `timeout` seconds to arrive (a slow client holding the connection)."""
    declared = request.headers.get("content-length")
    if declared_over(declared, limit):
        raise TooLarge(f"body of {declared} bytes is over the {limit}-byte limit")
    chunks, size = [], 0
    try:
        async with asyncio.timeout(timeout):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise TooLarge(f"body is over the {limit}-byte limit")
                chunks.append(chunk)
    except TimeoutError:
        raise TooSlow(f"body not received within {timeout:g}s") from None
    return b"".join(chunks)


async def receive(request: Request) -> JSONResponse:
    started = time.perf_counter()
    received_at = utcnow()
    runtime: Runtime = request.app.state.runtime
    name = request.path_params["provider"]
    forge = FORGES.get(name)
    if forge is None:
        return JSONResponse({"error": f"unknown provider {name!r}"}, status_code=404)
    try:
        settings = runtime.settings
        body = await read_body(request, settings.body_limit, settings.body_timeout)
        headers = {k.lower(): v for k, v in request.headers.items()}
        repo, event = ingest.verify(runtime, forge, headers, body)
        item = ingest.incoming(forge, repo, event, headers, body, received_at)
        answer = await ingest.record(runtime, request.app.state.writer, item)
    except WebhookError as exc:
        runtime.metrics.webhooks.labels(name, str(exc.status)).inc()
        # The rest of a body too large or too slow is not worth reading: close the connection.
        close = {"Connection": "close"} if isinstance(exc, TooLarge | TooSlow) else None
        return JSONResponse({"error": exc.message}, status_code=exc.status, headers=close)
    except DatabaseUnavailable as exc:
        runtime.metrics.webhooks.labels(name, "503").inc()
        return JSONResponse({"error": str(exc)}, status_code=503, headers={"Retry-After": "5"})
    except ClientDisconnect:
        return JSONResponse({"error": "client disconnected"}, status_code=400)
    runtime.metrics.webhooks.labels(name, answer.body["status"]).inc()
    runtime.metrics.webhook_seconds.labels(name).observe(time.perf_counter() - started)
    return JSONResponse(answer.body, status_code=answer.status)


routes = [Route("/webhooks/{provider}", receive, methods=["POST"])]

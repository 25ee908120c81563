"""The baseline: one Starlette route that reads the body and checks its HMAC, nothing else.

Served by uvicorn exactly like the real app (`bare:app`); the secret comes from the
environment variable named by BENCH_SECRET_ENV, as the real app reads it.
"""

from __future__ import annotations

import hashlib
import hmac
import os

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

SECRET = os.environ[os.environ.get("BENCH_SECRET_ENV", "BENCH_WEBHOOK_SECRET")].encode()


async def receive(request: Request) -> JSONResponse:
    body = await request.body()
    sent = request.headers.get("x-hub-signature-256", "")
    expected = "sha256=" + hmac.new(SECRET, body, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(sent.encode(), expected.encode()):
        return JSONResponse({"error": "signature does not match"}, status_code=401)
    return JSONResponse({"status": "queued"}, status_code=202)


app = Starlette(routes=[Route("/webhooks/{provider}", receive, methods=["POST"])])

"""The security headers on every answer, not only on the ones the handlers build: the
router's own 404 and 405, JSON answers, probes, static files. A handler that sets one of
them itself keeps its own value."""

from __future__ import annotations

from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.api import SECURITY_HEADERS
from service.rendering import error_page


class SecurityHeaders:
    """ASGI middleware adding SECURITY_HEADERS to each HTTP answer that lacks them."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    if name not in headers:
                        headers[name] = value
            await send(message)

        await self.app(scope, receive, send_with_headers)


async def server_error(request: Request, exc: Exception) -> Response:
    """The 500 answer: a page with the headers (this one is sent outside every middleware),
    and nothing of the exception itself, which may hold paths or URLs."""
    return error_page(500, "Server error", "Something went wrong; the service's log says what.")

"""The request's trace on every log line written while it is handled.

Google's load balancers and Cloud Run send `X-Cloud-Trace-Context`; other proxies and
OpenTelemetry clients send a W3C `traceparent`. With a project known, each line logged for
the request carries `logging.googleapis.com/trace`, so Cloud Logging groups a webhook's
lines under its request and links them to the trace.
"""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from trainhook.logs import cloud_trace, log_context

# Google's own header first: behind a Google load balancer it names the trace that the
# request log entry is filed under, whatever a client put in `traceparent`.
TRACE_HEADERS = ("x-cloud-trace-context", "traceparent")


def request_trace(headers: Headers, project: str | None) -> str | None:
    """The Cloud Logging trace name of a request, or None (no project, no usable header)."""
    for name in TRACE_HEADERS:
        trace = cloud_trace(headers.get(name), project)
        if trace is not None:
            return trace
    return None


class TraceContext:
    """ASGI middleware: the request's trace in the log context while it is handled.

    A pure ASGI middleware (not BaseHTTPMiddleware) so the handler runs in this task and
    sees the context variable that `log_context` sets.
    """

    def __init__(self, app: ASGIApp, project: str | None) -> None:
        self.app = app
        self.project = project or None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        trace = None
        if scope["type"] == "http" and self.project:
            trace = request_trace(Headers(scope=scope), self.project)
        if trace is None:
            await self.app(scope, receive, send)
            return
        with log_context(trace=trace):
            await self.app(scope, receive, send)

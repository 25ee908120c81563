"""GET /events: Server-Sent Events for open pages.

`/events?build=N&since=E.L` follows one build (stage changes, log chunks, its status);
`/events?builds=1,2,3&since=E&top=T&repo=R&branch=B` follows the rows of a list page and
announces newer builds matching its filters. `since` (or the `Last-Event-ID` header a
reconnecting EventSource sends) is the position the page is at; what it missed is caught up
from the database in one query, the rest comes from the process's one poller (service.hub).
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

import anyio
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from service import feed
from service.api import MAX_ID, SECURITY_HEADERS, ParamError, parse_build_id, read
from service.feed import Interest, Position
from service.hub import RELOAD, Hub, Message, Subscriber, build_message, stage_message
from service.rendering import error_page
from trainhook.errors import DatabaseUnavailable
from trainhook.runtime import Runtime

RETRY_MS = 2000  # EventSource waits this long before reconnecting
HEARTBEAT = 15.0  # a comment this often keeps proxies from closing an idle stream
LIFETIME = 300.0  # a stream ends after this; the browser reconnects and catches up
MAX_IDS = 200


def parse_interest(params: Any) -> Interest:
    """The subscription in the query string; raises ParamError naming the parameter."""
    if params.get("build"):
        build = parse_build_id(params["build"])
        return Interest(build=build if build is not None else MAX_ID)
    raw = params.get("builds") or ""
    ids = frozenset(parse_build_id(p) or MAX_ID for p in raw.split(",") if p)
    if len(ids) > MAX_IDS:
        raise ParamError(f"parameter 'builds' takes at most {MAX_IDS} ids")
    # `top`: the newest build the page shows (0: it shows none); absent: no news wanted.
    raw_top = params.get("top") or ""
    top = None if not raw_top else 0 if raw_top == "0" else parse_build_id(raw_top) or MAX_ID
    return Interest(
        ids=ids, top=top, repo=params.get("repo") or None, branch=params.get("branch") or None
    )


def _caught_up(rows: Any, since: Position, upto: Position) -> list[Message]:
    """Messages from a catch-up query, with positions a reconnect can resume from."""
    out: list[Message] = []
    for row in (r for r in rows if r.kind == "e"):
        out.append(stage_message(row, Position(row.id, since.log)))
    for row in (r for r in rows if r.kind == "l"):
        data = {"build": row.build_id, "id": row.id, "stage": row.stage, "text": row.text}
        out.append(Message("log", data, Position(upto.event, row.id)))
    out += [build_message(row, upto) for row in rows if row.kind == "b"]
    return out


class EventStream(Response):
    """A text/event-stream answer fed from a subscriber's queue; ends when the client goes
    away, the hub closes, the subscriber overflows or its lifetime is over."""

    media_type = "text/event-stream"

    def __init__(self, hub: Hub | None, sub: Subscriber | None, first: list[bytes]) -> None:
        super().__init__(
            headers={**SECURITY_HEADERS, "Cache-Control": "no-store", "X-Accel-Buffering": "no"}
        )
        # A stream has no length: drop the `content-length: 0` Response adds for an empty body.
        self.raw_headers = [(k, v) for k, v in self.raw_headers if k != b"content-length"]
        self.hub, self.sub, self.first = hub, sub, first

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
        try:
            async with anyio.create_task_group() as group:

                async def watch() -> None:
                    while (await receive())["type"] != "http.disconnect":
                        pass
                    group.cancel_scope.cancel()

                group.start_soon(watch)
                await self._stream(send)
                group.cancel_scope.cancel()
        except OSError:
            pass  # the client went away mid-write
        finally:
            if self.hub is not None and self.sub is not None:
                self.hub.unsubscribe(self.sub)
        with contextlib.suppress(OSError):
            await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _stream(self, send: Send) -> None:
        async def emit(chunk: bytes) -> None:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})

        await emit(f"retry: {RETRY_MS}\n\n".encode())
        for chunk in self.first:
            await emit(chunk)
        if self.sub is None or self.hub is None:
            return
        deadline = time.monotonic() + LIFETIME
        while time.monotonic() < deadline:
            message: Message | None = None
            with anyio.move_on_after(HEARTBEAT) as waited:
                message = await self.sub.queue.get()
            if waited.cancelled_caught:
                # Nothing for this page: its position moves on with the hub's.
                position = self.hub.position
                await emit(b": ping\n" + (f"id: {position}\n\n" if position else "\n").encode())
                continue
            if message is None:
                return
            await emit(message.encoded)
            if message.event == "reload":
                return


async def events(request: Request) -> Response:
    runtime: Runtime = request.app.state.runtime
    hub: Hub = request.app.state.hub
    try:
        interest = parse_interest(request.query_params)
    except ParamError as exc:
        return error_page(400, "Bad request", str(exc))
    since = Position.parse(request.headers.get("last-event-id")) or Position.parse(
        request.query_params.get("since")
    )
    try:
        sub, upto = await hub.subscribe(interest)
    except DatabaseUnavailable:
        # Still a stream, so the browser keeps retrying until the database is back.
        return EventStream(None, None, [b": database unavailable\n\n"])
    first: list[bytes] = []
    if since is not None and (since.event < upto.event or since.log < upto.log):
        try:
            rows = await anyio.to_thread.run_sync(
                read, runtime.engine, feed.catch_up, interest, since, upto
            )
        except DatabaseUnavailable:
            hub.unsubscribe(sub)
            return EventStream(None, None, [b": database unavailable\n\n"])
        missed = _caught_up(rows, since, upto)
        too_many = max(sum(r.kind == k for r in rows) for k in "el") >= feed.CATCH_UP_LIMIT
        # Too far behind to replay: the page reloads itself from the database instead.
        first = [RELOAD.encoded] if too_many else [m.encoded for m in missed]
    return EventStream(hub, sub, first)


routes = [Route("/events", events, methods=["GET"])]

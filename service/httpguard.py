"""uvicorn's HTTP protocol with the limits a public webhook endpoint needs against slow or
greedy clients.

uvicorn keeps a connection open for as long as its client takes to send a request's head,
and keeps every header line it is sent: a client trickling a header a byte at a time
(slowloris) holds its connection forever, and one sending megabytes of header lines makes the
server hold them all. This protocol gives each request head a deadline (answered 408 and
closed) and a size cap (answered 431 and closed). The body is the handlers' business: the
webhook route reads it within TRAINHOOK_BODY_TIMEOUT and TRAINHOOK_BODY_LIMIT.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

MAX_HEAD_BYTES = 64 * 1024  # request line + headers; GitHub's are a few KiB


def _answer(status: str, message: str) -> bytes:
    body = message.encode("ascii")
    return (
        f"HTTP/1.1 {status}\r\ncontent-type: text/plain; charset=utf-8\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    ).encode("ascii") + body


def guarded_protocol(
    header_timeout: float, max_head_bytes: int = MAX_HEAD_BYTES
) -> type[asyncio.Protocol]:
    """The protocol class for `uvicorn.Config(http=...)`: a request head (from the
    connection's first byte, or the next request's) must arrive within `header_timeout`
    seconds and be at most `max_head_bytes`."""

    class GuardedHttpToolsProtocol(HttpToolsProtocol):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._head_timer: asyncio.TimerHandle | None = None
            self._head_bytes = 0
            self._head_too_large = False

        def _arm(self) -> None:
            if self._head_timer is None:
                self._head_timer = self.loop.call_later(header_timeout, self._head_expired)

        def _disarm(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def _head_expired(self) -> None:
            self._head_timer = None
            if self.transport.is_closing():
                return
            if self.cycle is not None and not self.cycle.response_complete:
                # A pipelined head waits behind a response still being made: the server is
                # the slow one, not the client.
                self._arm()
                return
            self.transport.write(_answer("408 Request Timeout", "request head too slow"))
            self.transport.close()

        def _count(self, size: int) -> None:
            self._head_bytes += size
            if self._head_bytes > max_head_bytes:
                self._head_too_large = True
                # Stops the parser; uvicorn then answers through send_400_response (below).
                raise ValueError("request head over the limit")

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()  # a connection that never sends a byte is held no longer than this

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._head_bytes = 0
            self._arm()

        def on_url(self, url: bytes) -> None:
            self._count(len(url))
            super().on_url(url)

        def on_header(self, name: bytes, value: bytes) -> None:
            self._count(len(name) + len(value) + 4)
            super().on_header(name, value)

        def on_headers_complete(self) -> None:
            self._disarm()
            super().on_headers_complete()

        def send_400_response(self, msg: str) -> None:
            if not self._head_too_large:
                return super().send_400_response(msg)
            self.transport.write(
                _answer("431 Request Header Fields Too Large", "request head too large")
            )
            self.transport.close()

    return GuardedHttpToolsProtocol

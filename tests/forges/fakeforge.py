"""A fake forge API: a real HTTP server (Starlette under uvicorn) on a free loopback port that
records every request exactly as it arrived and answers from a script the test sets."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.support.postgres import free_port


@dataclass(frozen=True)
class Seen:
    """One request: method, the path as sent (percent-encoding kept), query, headers, body."""

    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: Any

    @property
    def target(self) -> str:
        return f"{self.method} {self.path}"


Answer = Response | tuple[int, Any] | tuple[int, Any, dict[str, str]] | None
Handler = Callable[[Seen], Answer]


class FakeForge:
    """`handler(seen)` answers each request: a Response, (status, json[, headers]), or None
    for `201 {}`. Every request is appended to `seen`, in order."""

    def __init__(self) -> None:
        self.seen: list[Seen] = []
        self.handler: Handler = lambda seen: None
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        methods = ["GET", "POST", "PATCH", "PUT"]
        app = Starlette(routes=[Route("/{rest:path}", self._endpoint, methods=methods)])
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="fake-forge", daemon=True)

    async def _endpoint(self, request: Request) -> Response:
        raw = await request.body()
        seen = Seen(
            method=request.method,
            path=request.scope["raw_path"].decode(),
            query=request.url.query,
            headers={k.lower(): v for k, v in request.headers.items()},
            body=json.loads(raw) if raw else None,
        )
        self.seen.append(seen)
        answer = self.handler(seen)
        if answer is None:
            return JSONResponse({}, status_code=201)
        if isinstance(answer, Response):
            return answer
        status, body, *rest = answer
        return JSONResponse(body, status_code=status, headers=rest[0] if rest else None)

    def start(self) -> FakeForge:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("the fake forge did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)

    def wait_for(self, count: int, timeout: float = 10.0) -> list[Seen]:
        """The requests once there are at least `count` of them (fails after `timeout`)."""
        deadline = time.monotonic() + timeout
        while len(self.seen) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"expected {count} requests, got {self.seen}")
            time.sleep(0.02)
        return list(self.seen)


def running() -> Iterator[FakeForge]:
    forge = FakeForge().start()
    try:
        yield forge
    finally:
        forge.stop()

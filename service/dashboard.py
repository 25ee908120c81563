"""The status dashboard's routes (pages, history, export, actions, live events, static files)
and its lifespan: the one live-event poller of this process starts and stops with the app."""

from __future__ import annotations

import signal
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from types import FrameType
from typing import Any

from starlette.applications import Starlette
from starlette.routing import BaseRoute, Mount

from service import actions, events, export, history, pages
from service.hub import Hub
from service.rendering import static_files
from trainhook.runtime import Runtime


def end_streams_on_signals(hub: Hub) -> Callable[[], None]:
    """Make SIGTERM/SIGINT end the open event streams at once, then do what they did before.

    A server waits for open responses before it runs the app's shutdown; an event stream
    never ends by itself, so without this a graceful stop would wait for every tab to close.
    Only handlers set with `signal.signal` (uvicorn's, the default interrupt) are chained;
    returns a function restoring them."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous: dict[int, Any] = {}
    for signum in (signal.SIGTERM, signal.SIGINT):
        before = signal.getsignal(signum)
        if not callable(before):
            continue

        def handler(sig: int, frame: FrameType | None, before: Any = before) -> None:
            hub.end_streams_threadsafe()
            before(sig, frame)

        previous[signum] = before
        signal.signal(signum, handler)

    def restore() -> None:
        for signum, before in previous.items():
            signal.signal(signum, before)

    return restore


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    runtime: Runtime = app.state.runtime
    hub = Hub(runtime.engine)
    app.state.hub = hub
    await hub.start()
    restore = end_streams_on_signals(hub)
    try:
        yield
    finally:
        restore()
        await hub.close()


routes: list[BaseRoute] = [
    *export.routes,
    *actions.routes,
    *events.routes,
    *history.routes,
    *pages.routes,
    Mount("/static", app=static_files(), name="static"),
]

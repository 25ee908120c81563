"""The real app under uvicorn on a free loopback port, in a thread (for event streams and the
browser: the test client cannot hold a response open while the test goes on)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn

from service.app import create_app
from service.hub import Hub
from trainhook.runtime import Runtime


class LiveServer:
    def __init__(self, runtime: Runtime) -> None:
        self.app = create_app(runtime)
        # Port 0 through uvicorn's own bind: a free port, and TCP_NODELAY as in production.
        config = uvicorn.Config(
            self.app, host="127.0.0.1", port=0, log_level="warning", access_log=False
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.url = ""

    def start(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    @property
    def hub(self) -> Hub:
        return self.app.state.hub

    def stop(self) -> None:
        # As on SIGTERM: end the open event streams first, or shutdown waits for them.
        self.app.state.hub.end_streams_threadsafe()
        self.server.should_exit = True
        self.thread.join(timeout=15)


@contextmanager
def live_server(runtime: Runtime) -> Iterator[LiveServer]:
    server = LiveServer(runtime).start()
    try:
        yield server
    finally:
        server.stop()

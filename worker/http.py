"""The worker's own HTTP: GET /metrics, /healthz and /readyz on TRAINHOOK_WORKER_PORT.

With `serve` and `worker` as separate processes (the k8s layout), the stage, cache and
build counters live in the worker's registry; without this they never reach Prometheus.
The probes let an orchestrator restart a worker whose loop has stopped turning (`/healthz`)
and hold back one whose database does not answer (`/readyz`).

A small threaded stdlib server: the worker has no event loop, and a scrape must answer
while a stage holds the worker's thread.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import sqlalchemy as sa
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from trainhook.db import reading
from trainhook.metrics import QueueCollector
from trainhook.runtime import Runtime

log = logging.getLogger(__name__)


class LoopPulse:
    """What the worker loop reports about itself: when it last turned, whether a job holds
    it. Alive while it turns between jobs, or while a job runs (a stage may take an hour;
    its lease heartbeat is the job's own liveness)."""

    def __init__(self, stale_after: float) -> None:
        self.stale_after = stale_after
        self.last_turn = time.monotonic()
        self.busy = False
        self.stopped = False

    def turn(self, *, busy: bool = False) -> None:
        self.last_turn = time.monotonic()
        self.busy = busy

    def alive(self) -> tuple[bool, str]:
        if self.stopped:
            return False, "the worker loop has stopped"
        if self.busy:
            return True, "running a job"
        idle = time.monotonic() - self.last_turn
        if idle > self.stale_after:
            return False, f"the worker loop has not turned for {idle:.0f}s"
        return True, "waiting for jobs"


def _ready(runtime: Runtime) -> tuple[bool, str]:
    try:
        with reading(runtime.engine) as conn:
            conn.execute(sa.text("SELECT 1"))
    except Exception as exc:
        # The error text may hold the host or user: the answer only says what is down.
        log.warning("readiness check failed: %s", type(exc).__name__)
        return False, "database unreachable"
    return True, "ok"


class WorkerHttp:
    """The server, in a daemon thread; `close()` stops it."""

    def __init__(self, runtime: Runtime, pulse: LoopPulse, host: str, port: int) -> None:
        self.runtime = runtime
        self.pulse = pulse
        scrape = CollectorRegistry(auto_describe=False)
        scrape.register(QueueCollector(runtime.engine))
        self.scrape = scrape
        handler = self._handler()
        self.server = ThreadingHTTPServer((host, port), handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(
            target=self.server.serve_forever, name="worker-http", daemon=True
        )

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def start(self) -> WorkerHttp:
        self.thread.start()
        log.info("worker metrics and probes on port %d", self.port)
        return self

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def metrics(self) -> bytes:
        return generate_latest(self.runtime.metrics.registry) + generate_latest(self.scrape)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    self._send(200, outer.metrics(), CONTENT_TYPE_LATEST)
                elif path == "/healthz":
                    ok, reason = outer.pulse.alive()
                    self._json(200 if ok else 503, ok, reason)
                elif path == "/readyz":
                    ok, reason = _ready(outer.runtime)
                    self._json(200 if ok else 503, ok, reason)
                else:
                    self._json(404, False, "not found")

            def _json(self, code: int, ok: bool, reason: str) -> None:
                body: dict[str, Any] = {"status": "ok" if ok else "unavailable", "reason": reason}
                self._send(code, json.dumps(body).encode(), "application/json")

            def _send(self, code: int, body: bytes, content_type: str) -> None:
                self.send_response(code)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                # A probe every few seconds is not news; with -v it is shown.
                log.debug("%s %s", self.address_string(), format % args)

        return Handler

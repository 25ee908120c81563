"""The loop every background sender of the service runs in (commit statuses, pull request
comments, notifications): a daemon thread calling `tick()` every `interval` seconds until
stopped. A tick that raises (the database is down) is logged by name and retried after a
doubling wait, at most a minute, so an outage neither spins nor stops the sender."""

from __future__ import annotations

import logging
import threading
from typing import Self

log = logging.getLogger(__name__)

MAX_WAIT = 60.0


class BackgroundSender:
    """Subclasses set `name` and `interval`, and define `tick()`, `enabled` (no thread is
    started when there is nothing to send) and `close()` (their HTTP clients)."""

    name = "background sender"
    interval: float

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def enabled(self) -> bool:
        return True

    def tick(self) -> object:
        """One pass over what is due (what it returns, a count say, is for tests)."""
        raise NotImplementedError

    def close(self) -> None:
        """Release what the sender holds (its HTTP client); called once the thread ended."""

    def start(self) -> Self:
        if self.enabled and self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name=self.name.replace(" ", "-"), daemon=True
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None
        self.close()

    def _run(self) -> None:
        failures = 0
        while not self._stop.is_set():
            try:
                self.tick()
                failures = 0
            except Exception as exc:  # the database is down: keep trying, quietly
                failures += 1
                log.warning("%s: tick failed (%s)", self.name, type(exc).__name__)
            self._stop.wait(min(self.interval * 2**failures, MAX_WAIT))

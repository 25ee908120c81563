"""Keeps a claimed job's lease alive while it runs, and notices when it is lost."""

from __future__ import annotations

import logging
import threading
import time

from trainhook.queue import Job, Queue

log = logging.getLogger(__name__)


class Heartbeat:
    """Extends the lease every `interval` seconds (a third of the lease by default) in a
    daemon thread. `lost` is set when the queue says the lease is gone, or when no extension
    succeeded for a whole lease (say, the database was unreachable): another worker may run
    the job from then on, so the holder must stop writing."""

    def __init__(
        self, queue: Queue, job: Job, lease_seconds: float, interval: float | None = None
    ) -> None:
        self.queue = queue
        self.job = job
        self.lease_seconds = lease_seconds
        self.interval = interval if interval is not None else max(0.05, lease_seconds / 3)
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._last_ok = time.monotonic()
        self._thread = threading.Thread(
            target=self._run, name=f"heartbeat-job-{job.id}", daemon=True
        )

    def start(self) -> Heartbeat:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            if not self.beat():
                return

    def expired(self) -> bool:
        """True when the lease may be another worker's by now: lost, or not extended for two
        intervals. The latter means this process was frozen (a long pause, a stopped
        container) and its heartbeat thread has not run since: the lease is then checked at
        once rather than trusted, before anything more is written."""
        if self.lost.is_set():
            return True
        if time.monotonic() - self._last_ok > 2 * self.interval:
            return not self.beat()
        return False

    def beat(self) -> bool:
        """Extend the lease now; False once it is lost (and from then on)."""
        if self.lost.is_set():
            return False
        try:
            held = self.queue.heartbeat(self.job)
        except Exception as exc:
            if time.monotonic() - self._last_ok < self.lease_seconds:
                log.warning("job %d: heartbeat failed, will retry: %s", self.job.id, exc)
                return True
            held = False
        if held:
            self._last_ok = time.monotonic()
            return True
        log.warning("job %d: lease lost (another worker may run it now)", self.job.id)
        self.lost.set()
        return False

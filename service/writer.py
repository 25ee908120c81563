"""Group commit: one thread writes every waiting delivery in one transaction.

SQLite has one writer at a time; many request threads racing for its lock sleep in its busy
handler (unfair, up to 100 ms a sleep). One writer that takes whatever is waiting keeps the
lock uncontended and shares each commit among all the deliveries that arrived meanwhile. A
request still gets its answer only after the commit that holds its delivery.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from dataclasses import dataclass, field

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from service.intake import Incoming, Recorded, record_deliveries
from trainhook.errors import DatabaseUnavailable

log = logging.getLogger(__name__)
MAX_BATCH = 256


@dataclass
class _Pending:
    item: Incoming
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Recorded] = field(init=False)

    def __post_init__(self) -> None:
        self.future = self.loop.create_future()

    def settle(self, result: Recorded | BaseException) -> None:
        def apply() -> None:
            if self.future.done():
                return  # the client went away; the delivery is stored all the same
            if isinstance(result, BaseException):
                self.future.set_exception(result)
            else:
                self.future.set_result(result)

        self.loop.call_soon_threadsafe(apply)


class DeliveryWriter:
    """Records deliveries for the webhook handlers; start() once, stop() at shutdown."""

    def __init__(self, engine: Engine, max_batch: int = MAX_BATCH) -> None:
        self.engine = engine
        self.max_batch = max_batch
        self._queue: queue.SimpleQueue[_Pending | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def _ensure_started(self) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="delivery-writer", daemon=True
                )
                self._thread.start()

    async def record(self, item: Incoming) -> Recorded:
        """Store `item` (in a batch with others); raises DatabaseUnavailable."""
        self._ensure_started()
        pending = _Pending(item, asyncio.get_running_loop())
        self._queue.put(pending)
        return await pending.future

    def stop(self) -> None:
        """Write what is waiting, then end the thread."""
        thread = self._thread
        if thread is not None and thread.is_alive():
            self._queue.put(None)
            thread.join(timeout=30)

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            stopping = False
            while len(batch) < self.max_batch:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    stopping = True
                    break
                batch.append(nxt)
            self._write(batch)
            if stopping:
                return

    def _write(self, batch: list[_Pending]) -> None:
        try:
            with self.engine.begin() as conn:
                results = record_deliveries(conn, [p.item for p in batch])
        except (sa.exc.IntegrityError, sa.exc.DataError):
            # Not the dedupe key (that is ON CONFLICT DO NOTHING), or a value the database
            # refuses (PostgreSQL: NUL in text): one delivery's fault, so isolate it rather
            # than fail every delivery sharing its commit.
            if len(batch) > 1:
                for pending in batch:
                    self._write([pending])
                return
            log.warning("the database refused a delivery (a constraint or a value)")
            batch[0].settle(DatabaseUnavailable("the delivery could not be stored"))
            return
        except sa.exc.DBAPIError as exc:
            log.warning("database unavailable while recording deliveries: %s", type(exc).__name__)
            error = DatabaseUnavailable("database unavailable; the delivery was not stored")
            for pending in batch:
                pending.settle(error)
            return
        except Exception as exc:  # never leave a request waiting forever
            log.exception("recording deliveries failed")
            for pending in batch:
                pending.settle(exc)
            return
        for pending, result in zip(batch, results, strict=True):
            pending.settle(result)

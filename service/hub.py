"""The live-update hub: ONE poller per process reads what is new (one query per tick) and fans
it out to every open page through bounded in-memory queues. Many tabs cost one query per tick,
not one each; with no tab open it stops querying altogether."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import asdict, dataclass, field
from functools import cached_property
from typing import Any

import anyio
from sqlalchemy.engine import Engine

from service import feed
from service.api import read
from service.details import cache_levels, stage_facts
from service.feed import Interest, Position
from service.formatting import branch
from trainhook.builds import TERMINAL_BUILD
from trainhook.buildview import iso

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Message:
    """One server-sent event; encoded once, however many subscribers receive it."""

    event: str  # stage | log | build | reload
    data: dict[str, Any]
    position: Position

    @cached_property
    def encoded(self) -> bytes:
        body = json.dumps(self.data, separators=(",", ":"))
        return f"event: {self.event}\nid: {self.position}\ndata: {body}\n\n".encode()


RELOAD = Message("reload", {}, Position())


@dataclass(eq=False)
class Subscriber:
    interest: Interest
    queue: asyncio.Queue[Message | None]
    overflowed: bool = False

    def wants(self, message: Message) -> bool:
        data, want = message.data, self.interest
        if want.build is not None:
            return data["build"] == want.build
        if message.event == "log":
            return False
        if data["build"] in want.ids:
            return True
        # A build the list page does not show: news only if newer and matching its filters.
        return (
            want.top is not None
            and data["build"] > want.top
            and (not want.repo or data.get("repo") == want.repo)
            and (not want.branch or data.get("branch") == want.branch)
        )

    def offer(self, message: Message | None) -> None:
        """Queue without waiting. A subscriber that fell a whole queue behind is told to
        reload (its page re-reads the database) instead of holding the hub up."""
        if self.overflowed:
            return
        try:
            self.queue.put_nowait(message)
        except asyncio.QueueFull:
            self.overflowed = True
            while not self.queue.empty():
                self.queue.get_nowait()
            self.queue.put_nowait(RELOAD if message is not None else None)


def stage_message(row: Any, position: Position) -> Message:
    # With its status: the Cloud Build builder's record is known by it (service/details.py).
    stage = {"name": row.stage, "status": row.status, "detail": row.text, "cache": row.cache}
    levels = cache_levels({"stages": [stage]}) if row.stage in ("hash", "train") else {}
    data = {
        "build": row.build_id,
        "id": row.id,
        "stage": row.stage,
        "status": row.status,
        "at": iso(row.at),
        "cache": row.cache,
        "detail": row.text,
        "facts": [asdict(f) for f in stage_facts(stage)],
        "levels": levels,
        "repo": row.repo,
        "branch": branch(row.ref or ""),
    }
    return Message("stage", data, position)


def build_message(row: Any, position: Position) -> Message:
    """A build's status from a `b` row (its `at` is the finish time, `text` the error)."""
    data = {
        "build": row.id,
        "status": row.status,
        "finished_at": iso(row.at),
        "error": row.text,
        "repo": row.repo,
        "branch": branch(row.ref or ""),
    }
    return Message("build", data, position)


@dataclass
class Hub:
    engine: Engine
    interval: float = 0.5
    idle_after: float = 15.0  # keep polling this long after the last tab closed (reloads)
    queue_size: int = 1000
    gap_wait: float = 1.0  # how long an id gap may hold later rows back (see `_contiguous`)
    subscribers: set[Subscriber] = field(default_factory=set)
    position: Position | None = None
    polls: int = 0
    closing: bool = False
    _statuses: dict[int, str] = field(default_factory=dict)
    _gaps: dict[tuple[str, int], float] = field(default_factory=dict)
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    _wake: asyncio.Event = field(default_factory=asyncio.Event)
    _task: asyncio.Task[None] | None = None
    _loop: asyncio.AbstractEventLoop | None = None

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._task = asyncio.create_task(self._run(), name="live-updates poller")

    async def subscribe(self, interest: Interest) -> tuple[Subscriber, Position]:
        """Register a subscriber; returns it and the position from which the poller will feed
        it (everything before is the caller's to catch up). Raises DatabaseUnavailable."""
        async with self._lock:
            if self.position is None:
                self.position = await anyio.to_thread.run_sync(read, self.engine, feed.head)
            sub = Subscriber(interest, asyncio.Queue(self.queue_size))
            if self.closing:
                sub.offer(None)
            self.subscribers.add(sub)
            self._wake.set()
            return sub, self.position

    def unsubscribe(self, sub: Subscriber) -> None:
        self.subscribers.discard(sub)

    def end_streams(self) -> None:
        """Server going down: end every open stream now (browsers reconnect elsewhere)."""
        if self.closing:
            return
        self.closing = True
        for sub in list(self.subscribers):
            sub.offer(None)

    def end_streams_threadsafe(self) -> None:
        """`end_streams` from any thread (a signal handler, a test)."""
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self.end_streams)

    async def close(self) -> None:
        self.end_streams()
        if self._task is not None:
            self._task.cancel()
            with anyio.CancelScope(shield=True):
                await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _run(self) -> None:
        idle_since: float | None = None
        failures = 0
        while True:
            if self.subscribers:
                idle_since = None
            else:
                idle_since = idle_since or time.monotonic()
                if time.monotonic() - idle_since > self.idle_after:
                    async with self._lock:
                        self.position, self._statuses, self._gaps = None, {}, {}
                        self._wake.clear()
                    await self._wake.wait()
                    idle_since = None
                    continue
            try:
                await self.tick()
                failures = 0
            except Exception as exc:  # the database is down, or one bad row: keep serving
                failures += 1
                log.warning("live updates: poll failed (%s)", type(exc).__name__)
            await asyncio.sleep(min(self.interval * 2**failures, 10.0))

    def _active(self) -> list[int]:
        wanted: set[int] = set()
        for sub in self.subscribers:
            wanted.update(sub.interest.ids)
            if sub.interest.build is not None:
                wanted.add(sub.interest.build)
        wanted.update(b for b, s in self._statuses.items() if s not in TERMINAL_BUILD)
        live = [b for b in wanted if self._statuses.get(b) not in TERMINAL_BUILD]
        return sorted(live, reverse=True)[:500]

    def _contiguous(self, table: str, last: int, row_id: int) -> bool:
        """True when `row_id` may be delivered after `last`. Ids are handed out in insert
        order but a transaction may commit after a later one (or roll back): a gap holds
        later rows back until it fills or `gap_wait` passes, so every reader sees rows in id
        order and a position is a complete cursor."""
        if row_id == last + 1:
            return True
        first_seen = self._gaps.setdefault((table, last + 1), time.monotonic())
        return time.monotonic() - first_seen >= self.gap_wait

    async def tick(self) -> None:
        """One poll: a single query, then fan-out."""
        after = self.position
        if after is None:
            return
        watched = {s.interest.build for s in self.subscribers if s.interest.build is not None}
        rows = await anyio.to_thread.run_sync(
            read, self.engine, feed.poll, after, self._active(), watched
        )
        self.polls += 1
        if self.position != after:  # went idle meanwhile: these rows belong to nobody
            return
        messages, event_id, log_id = [], after.event, after.log
        for row in (r for r in rows if r.kind == "e"):
            if not self._contiguous("e", event_id, row.id):
                break
            event_id = row.id
            messages.append(stage_message(row, Position(event_id, log_id)))
            # Follow this build's status from the next poll on (a new build, say).
            self._statuses.setdefault(row.build_id, "")
        for row in (r for r in rows if r.kind == "l"):
            if not self._contiguous("l", log_id, row.id):
                break
            log_id = row.id
            if row.text is not None:
                data = {"build": row.build_id, "id": row.id, "stage": row.stage, "text": row.text}
                messages.append(Message("log", data, Position(event_id, log_id)))
        end = Position(event_id, log_id)
        for row in (r for r in rows if r.kind == "b"):
            if self._statuses.get(row.id) != row.status:
                self._statuses[row.id] = row.status
                messages.append(build_message(row, end))
        last = {"e": event_id, "l": log_id}
        self._gaps = {k: v for k, v in self._gaps.items() if k[1] > last[k[0]]}
        if len(self._statuses) > 10_000:
            self._statuses = {b: s for b, s in self._statuses.items() if s not in TERMINAL_BUILD}
        for message in messages:
            for sub in list(self.subscribers):
                if sub.wants(message):
                    sub.offer(message)
        self.position = end

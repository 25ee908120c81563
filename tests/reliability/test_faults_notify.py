"""Commit statuses sent by two service replicas whose reports interleave, against a fake
forge API over real HTTP: a replica holding a batch read before another replica reported a
newer status never sends the older one after it (the forge would show a finished build as
pending again), and each status is sent once."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from starlette.responses import Response

from service.statusreporter import StatusReporter
from tests.forges.fakeforge import FakeForge, Seen, running
from trainhook.builds import BuildSpec, create_build, mark_finished, mark_started
from trainhook.settings import Settings

TOKEN = "forge-token-" + "s3cr3t" * 6
FIRST, SECOND = "1" * 40, "2" * 40


@pytest.fixture
def forge() -> Iterator[FakeForge]:
    yield from running()


class HeldAnswer(Response):
    """The forge's answer, held until `gate` opens (the forge is slow for this one request);
    the fake forge goes on serving other requests meanwhile."""

    def __init__(self, gate: threading.Event) -> None:
        super().__init__(b"{}", status_code=201, media_type="application/json")
        self.gate = gate

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await asyncio.to_thread(self.gate.wait, 20)
        await super().__call__(scope, receive, send)


def states_for(forge: FakeForge, sha: str) -> list[str]:
    return [s.body["state"] for s in forge.seen if sha in s.path]


def test_a_replica_with_a_stale_batch_never_sends_an_older_status_after_a_newer_one(
    make_settings, sqlite_url: str, sqlite_engine: Any, forge: FakeForge
):
    settings: Settings = make_settings(
        sqlite_url,
        extra=f'forge_token_env = "FORGE_TOKEN"\nforge_api_url = "{forge.url}"',
        env={"FORGE_TOKEN": TOKEN},
    )
    repo = settings.repos[0]
    ids = []
    with sqlite_engine.begin() as conn:
        for sha in (FIRST, SECOND):
            spec = BuildSpec(provider=repo.provider, repo=repo.name, ref="refs/heads/main", sha=sha)
            ids.append(create_build(conn, spec))
            mark_started(conn, ids[-1])
    gate = threading.Event()

    def slow_first(seen: Seen) -> Response | None:
        return HeldAnswer(gate) if FIRST in seen.path and len(forge.seen) == 1 else None

    forge.handler = slow_first
    one, two = StatusReporter(settings, sqlite_engine), StatusReporter(settings, sqlite_engine)
    sent_by_one: list[int] = []
    ticking = threading.Thread(target=lambda: sent_by_one.append(one.tick()))
    ticking.start()  # reads both builds (running), then waits on the forge for the first
    try:
        forge.wait_for(1)
        with sqlite_engine.begin() as conn:
            mark_finished(conn, ids[1], "succeeded")
        assert two.tick() == 1  # the other replica reports the second build's success
    finally:
        gate.set()
        ticking.join(timeout=30)

    assert states_for(forge, FIRST) == ["pending"]
    assert states_for(forge, SECOND) == ["success"], "a stale status was sent after a newer one"
    assert one.tick() == 0 and two.tick() == 0  # nothing is owed any more
    assert states_for(forge, SECOND) == ["success"]

"""Pub/Sub unreachable for 20 s while 200 signed pushes arrive through the real app: every
push is answered 202 at once, and every one is built exactly once when Pub/Sub is back."""

from __future__ import annotations

import time

import pytest
import sqlalchemy as sa
from starlette.testclient import TestClient

from service.app import create_app
from tests.queue.conftest import Counter, Stack, all_finished, workers_running
from tests.service.github_payloads import push_payload, signed
from tests.support.pubsub import PubSubEmulator
from trainhook.db import reading
from trainhook.models import builds, deliveries, jobs

PUSHES = 200
OUTAGE = 20.0


@pytest.mark.slow
def test_pubsub_down_for_20s_during_200_webhooks(pstack: Stack, pubsub_emulator: PubSubEmulator):
    service = pstack.runtime()
    service.start_background()  # the outbox sweeper, as `trainhook serve` runs it
    counter = Counter()
    answers: list[int] = []
    slowest = 0.0
    with (
        workers_running([pstack.runtime(), pstack.runtime()], counter.pipeline()),
        TestClient(create_app(service)) as client,
    ):
        try:
            for i in range(PUSHES):
                if i == 20:
                    pubsub_emulator.pause()  # SIGSTOP: connections hang, nothing answers
                    paused_at = time.monotonic()
                if i == PUSHES - 20:
                    time.sleep(max(0.0, paused_at + OUTAGE - time.monotonic()))
                    pubsub_emulator.resume()
                body, headers = signed(push_payload(ref=f"refs/heads/b{i % 10}", after=f"{i:040x}"))
                started = time.monotonic()
                response = client.post("/webhooks/github", content=body, headers=headers)
                slowest = max(slowest, time.monotonic() - started)
                answers.append(response.status_code)
                if 20 <= i < PUSHES - 20:
                    time.sleep(OUTAGE / (PUSHES - 40) * 0.9)
        finally:
            pubsub_emulator.resume()
        assert answers == [202] * PUSHES
        assert slowest < 1.0, f"a webhook waited {slowest:.2f}s on Pub/Sub"

        finished = all_finished(pstack.engine, PUSHES)
        deadline = time.monotonic() + 90
        while not finished():
            assert time.monotonic() < deadline, "not every build ran within 90 s"
            time.sleep(0.2)

    with reading(pstack.engine) as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(deliveries)).scalar() == PUSHES
        by_status = dict(
            conn.execute(
                sa.select(builds.c.status, sa.func.count()).group_by(builds.c.status)
            ).all()
        )
        unpublished = conn.execute(
            sa.select(sa.func.count()).where(jobs.c.published_at.is_(None))
        ).scalar()
    assert by_status == {"succeeded": PUSHES}
    assert unpublished == 0
    assert max(counter.runs.values()) == 1  # no stage of any build ran twice

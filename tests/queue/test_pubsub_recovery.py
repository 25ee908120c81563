"""Pub/Sub losing what it held: the emulator restarted (topics, subscriptions and messages
gone, as its state is in memory) or a subscription deleted and made again. The workers and
the outbox recreate what is missing, and every job whose message was lost is published
again and built once."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import timedelta

import pytest
import sqlalchemy as sa

from tests.conftest import new_pg_database
from tests.queue.conftest import (
    Counter,
    Stack,
    all_finished,
    new_build,
    pubsub_env,
    run_workers,
)
from tests.support.postgres import PostgresServer
from tests.support.pubsub import PubSubEmulator, emulator_or_skip
from trainhook.db import make_engine, reading
from trainhook.models import jobs, utcnow
from trainhook.queue.outbox import owe_messages
from trainhook.settings import Settings

BUILDS = 12


@pytest.fixture
def own_emulator() -> Iterator[PubSubEmulator]:
    """An emulator of this test's own: restarting the suite's one would wipe other tests'."""
    emulator = emulator_or_skip()
    yield emulator
    emulator.stop()


@pytest.fixture
def lost_stack(
    own_emulator: PubSubEmulator,
    pg_server: PostgresServer,
    make_settings: Callable[..., Settings],
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Stack]:
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", own_emulator.host)
    url = new_pg_database(pg_server)
    env = {**pubsub_env(own_emulator), "TRAINHOOK_LEASE_SECONDS": "5"}
    stack = Stack("pubsub-postgres", url, make_engine(url), make_settings, env)
    stack.setup_pubsub()
    yield stack
    stack.close()
    stack.engine.dispose()


def published_all(stack: Stack, count: int) -> None:
    relay = stack.runtime().queue.relay  # type: ignore[attr-defined]
    ids = [new_build(stack.engine, f"{i:040x}") for i in range(count)]
    assert relay.publish(ids).ok


@pytest.mark.postgres
def test_emulator_restart_loses_topic_and_messages_yet_every_job_runs_once(
    lost_stack: Stack, own_emulator: PubSubEmulator
):
    # Clients made before the restart, as in long-running processes.
    service, workers = lost_stack.runtime(), [lost_stack.runtime(), lost_stack.runtime()]
    published_all(lost_stack, BUILDS)  # every message waits in the subscription
    own_emulator.stop()
    own_emulator.start()  # same port, empty: no topic, no subscription, no message

    service.start_background()  # the outbox sweeper, as `trainhook serve` runs it
    counter = Counter()
    started = time.monotonic()
    run_workers(workers, counter.pipeline(), all_finished(lost_stack.engine, BUILDS), 60)
    assert time.monotonic() - started < 30  # recreated at the first NOT_FOUND, not by age
    assert len({build for build, _ in counter.runs}) == BUILDS
    assert max(counter.runs.values()) == 1  # no stage of any build ran twice
    with reading(lost_stack.engine) as conn:
        assert set(conn.execute(sa.select(jobs.c.status)).scalars()) == {"done"}


@pytest.mark.postgres
def test_a_lost_message_is_published_again_once_its_job_idled_for_the_republish_time(
    lost_stack: Stack,
):
    # The subscription is deleted and made again by hand before any worker sees a
    # NOT_FOUND: nothing tells the processes, only the job's age in the database does.
    lost_stack.env["TRAINHOOK_PUBSUB_REPUBLISH_SECONDS"] = "3"
    published_all(lost_stack, 1)
    clients = lost_stack.runtime().queue.clients  # type: ignore[attr-defined]
    clients.subscriber.delete_subscription(request={"subscription": clients.subscription})
    lost_stack.setup_pubsub()
    lost = time.monotonic()

    service = lost_stack.runtime()
    service.start_background()
    counter = Counter()
    run_workers([lost_stack.runtime()], counter.pipeline(), all_finished(lost_stack.engine, 1), 30)
    assert time.monotonic() - lost >= 3  # published again by age, not before
    assert list(counter.runs.values()) == [1] * len(counter.runs)


def test_only_jobs_idle_past_the_republish_time_are_owed_again(db_url: str):
    engine = make_engine(db_url)
    now, long_ago, idle = utcnow(), utcnow() - timedelta(minutes=30), timedelta(minutes=10)
    states = {  # name: the job's columns
        "queued, lost": dict(status="queued", available_at=long_ago, published_at=long_ago),
        "queued, just published": dict(status="queued", available_at=long_ago, published_at=now),
        "queued, backing off": dict(status="queued", available_at=now, published_at=long_ago),
        "running, lease expired long ago": dict(
            status="running", lease_until=long_ago, published_at=long_ago
        ),
        "running, live lease": dict(
            status="running", lease_until=now + idle, published_at=long_ago
        ),
        "done": dict(status="done", published_at=long_ago),
        "dead": dict(status="dead", published_at=long_ago),
        "never published": dict(status="queued", available_at=long_ago, published_at=None),
    }
    ids = {}
    for i, (name, values) in enumerate(states.items()):
        ids[name] = new_build(engine, f"{i:040x}")
        with engine.begin() as conn:
            conn.execute(jobs.update().where(jobs.c.build_id == ids[name]).values(**values))

    assert owe_messages(engine, idle_for=idle) == 2

    with reading(engine) as conn:
        owed = set(
            conn.execute(sa.select(jobs.c.build_id).where(jobs.c.published_at.is_(None))).scalars()
        )
    expected = {"queued, lost", "running, lease expired long ago", "never published"}
    assert owed == {ids[name] for name in expected}
    # A new subscription: every unfinished job is owed, finished ones never.
    assert owe_messages(engine) == 3
    engine.dispose()

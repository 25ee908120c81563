"""The SQL queue's claim, lease, heartbeat and attempts, each checked on the row it writes
(SQLite and PostgreSQL): what keeps two workers off one job and a job from running forever."""

from __future__ import annotations

from datetime import timedelta

import pytest
import sqlalchemy as sa

from tests.queue.conftest import job, new_build
from trainhook.db import make_engine
from trainhook.models import jobs, utcnow
from trainhook.queue.sql import SqlQueue


@pytest.fixture
def queue_engine(db_url: str):
    engine = make_engine(db_url)
    yield engine
    engine.dispose()


def builds(engine: sa.Engine, count: int) -> list[int]:
    return [new_build(engine, sha=f"{i:040x}", ref=f"refs/heads/b{i}") for i in range(1, count + 1)]


def set_job(engine: sa.Engine, build_id: int, **values: object) -> None:
    with engine.begin() as conn:
        conn.execute(jobs.update().where(jobs.c.build_id == build_id).values(**values))


def test_claim_takes_the_oldest_runnable_job_first(queue_engine):
    ids = builds(queue_engine, 3)
    queue = SqlQueue(queue_engine, lease_seconds=60)

    order = [queue.claim(f"w{i}") for i in range(3)]

    assert [j.build_id for j in order if j is not None] == ids
    assert queue.claim("w4") is None


def test_claim_sets_owner_lease_and_counts_the_attempt(queue_engine):
    (build_id,) = builds(queue_engine, 1)
    queue = SqlQueue(queue_engine, lease_seconds=60)
    before = utcnow()

    claimed = queue.claim("w1")

    assert claimed is not None and (claimed.attempts, claimed.owner) == (1, "w1")
    row = job(queue_engine, build_id)
    assert (row.status, row.lease_owner, row.attempts) == ("running", "w1", 1)
    assert before + timedelta(seconds=59) <= row.lease_until <= utcnow() + timedelta(seconds=61)


def test_a_job_under_a_live_lease_or_not_yet_due_is_not_claimed(queue_engine):
    due_later, leased = builds(queue_engine, 2)
    set_job(queue_engine, due_later, available_at=utcnow() + timedelta(seconds=30))
    queue = SqlQueue(queue_engine, lease_seconds=60)
    assert queue.claim("w1").build_id == leased

    assert queue.claim("w2") is None
    set_job(queue_engine, due_later, available_at=utcnow() - timedelta(seconds=1))
    assert queue.claim("w2").build_id == due_later


def test_a_heartbeat_extends_the_lease_so_no_other_worker_takes_the_job(queue_engine):
    (build_id,) = builds(queue_engine, 1)
    queue = SqlQueue(queue_engine, lease_seconds=60)
    held = queue.claim("holder")
    assert held is not None
    # The lease has run out, but its holder is still alive: its heartbeat renews it.
    set_job(queue_engine, build_id, lease_until=utcnow() - timedelta(seconds=1))

    assert queue.heartbeat(held) is True

    row = job(queue_engine, build_id)
    assert row.lease_until >= utcnow() + timedelta(seconds=55)
    assert queue.claim("other") is None


def test_an_expired_lease_is_taken_over_and_the_old_holder_loses_it(queue_engine):
    (build_id,) = builds(queue_engine, 1)
    queue = SqlQueue(queue_engine, lease_seconds=60)
    crashed = queue.claim("crashed")
    assert crashed is not None
    set_job(queue_engine, build_id, lease_until=utcnow() - timedelta(seconds=1))

    rescued = queue.claim("rescuer")

    assert rescued is not None and (rescued.attempts, rescued.owner) == (2, "rescuer")
    assert queue.heartbeat(crashed) is False
    queue.complete(crashed)
    queue.release(crashed, error="late")
    queue.bury(crashed, "late")
    row = job(queue_engine, build_id)
    assert (row.status, row.lease_owner, row.last_error) == ("running", "rescuer", None)


def test_a_release_not_counted_gives_the_attempt_back(queue_engine):
    (build_id,) = builds(queue_engine, 1)
    queue = SqlQueue(queue_engine, lease_seconds=60)
    first = queue.claim("w1")
    assert first is not None

    queue.release(first, error="worker stopped", counted=False)

    row = job(queue_engine, build_id)
    assert (row.status, row.attempts, row.lease_owner, row.lease_until) == (
        "queued",
        0,
        None,
        None,
    )
    assert row.last_error == "worker stopped"
    again = queue.claim("w2")
    assert again is not None and again.attempts == 1


def test_a_counted_release_keeps_the_attempt_and_waits_its_delay(queue_engine):
    (build_id,) = builds(queue_engine, 1)
    queue = SqlQueue(queue_engine, lease_seconds=60)
    first = queue.claim("w1")
    assert first is not None

    queue.release(first, delay=30, error="registry unreachable")

    row = job(queue_engine, build_id)
    assert (row.status, row.attempts) == ("queued", 1)
    assert row.available_at >= utcnow() + timedelta(seconds=25)
    assert queue.claim("w2") is None
    set_job(queue_engine, build_id, available_at=utcnow() - timedelta(seconds=1))
    assert queue.claim("w2").attempts == 2


def test_complete_and_bury_end_the_lease(queue_engine):
    done_id, dead_id = builds(queue_engine, 2)
    queue = SqlQueue(queue_engine, lease_seconds=60)
    done, dead = queue.claim("w1"), queue.claim("w2")
    assert done is not None and dead is not None

    queue.complete(done)
    queue.bury(dead, "gave up")

    finished, buried = job(queue_engine, done_id), job(queue_engine, dead_id)
    assert (finished.status, finished.lease_until) == ("done", None)
    assert (buried.status, buried.lease_until, buried.last_error) == ("dead", None, "gave up")
    assert buried.published_at is not None  # no dead-letter message owed
    set_job(queue_engine, done_id, lease_until=utcnow() - timedelta(seconds=1))
    assert queue.claim("w3") is None


def test_a_job_due_at_the_very_instant_of_the_claim_is_claimed(queue_engine, monkeypatch):
    # A release without delay on a clock that has not ticked since (coarse clocks, fast
    # workers) is due now, not later.
    import trainhook.queue.sql

    (build_id,) = builds(queue_engine, 1)
    now = utcnow()
    set_job(queue_engine, build_id, available_at=now)
    monkeypatch.setattr(trainhook.queue.sql, "utcnow", lambda: now)

    claimed = SqlQueue(queue_engine, lease_seconds=60).claim("w1")

    assert claimed is not None and claimed.build_id == build_id


def test_finishing_one_job_leaves_the_same_owners_other_job_running(queue_engine):
    first, second = builds(queue_engine, 2)
    queue = SqlQueue(queue_engine, lease_seconds=60)
    a, b = queue.claim("worker-1"), queue.claim("worker-1")
    assert a is not None and b is not None and (a.build_id, b.build_id) == (first, second)

    queue.complete(a)

    assert (job(queue_engine, first).status, job(queue_engine, second).status) == (
        "done",
        "running",
    )
    assert queue.heartbeat(b)


def test_claims_follow_the_order_jobs_were_queued_in_whenever_each_became_due(queue_engine):
    older, newer = builds(queue_engine, 2)
    set_job(queue_engine, older, available_at=utcnow() - timedelta(seconds=1))
    set_job(queue_engine, newer, available_at=utcnow() - timedelta(seconds=60))
    queue = SqlQueue(queue_engine, lease_seconds=60)

    assert [queue.claim("w1").build_id, queue.claim("w2").build_id] == [older, newer]


def test_a_claim_for_one_build_takes_that_builds_job_only(queue_engine):
    # The Pub/Sub queue's claim: its message names the build, and it stamps `published_at`.
    from trainhook.queue.sql import claim_row

    first, second = builds(queue_engine, 2)
    stamp = utcnow() - timedelta(seconds=5)
    lease = timedelta(seconds=60)
    with queue_engine.begin() as conn:
        claimed = claim_row(conn, "w1", lease, build_id=second, published_at=stamp)

    assert claimed is not None and (claimed.build_id, claimed.owner) == (second, "w1")
    assert job(queue_engine, first).status == "queued"
    row = job(queue_engine, second)
    assert (row.status, row.lease_owner, row.published_at) == ("running", "w1", stamp)
    with queue_engine.begin() as conn:
        assert claim_row(conn, "w2", lease, build_id=second) is None


def test_on_postgresql_claimers_holding_jobs_never_make_another_wait(queue_engine, db_url):
    # Each claim's transaction still open (its row locks held): the next claimer skips the
    # locked job and takes the next one at once, and locks no more than the one it takes.
    from trainhook.queue.sql import claim_row

    if not db_url.startswith("postgresql"):
        pytest.skip("row locks: SQLite serialises its writers instead")
    ids = builds(queue_engine, 3)
    lease = timedelta(seconds=60)
    with queue_engine.connect() as a, queue_engine.connect() as b, queue_engine.connect() as c:
        taken = []
        for conn, owner in ((a, "w1"), (b, "w2"), (c, "w3")):
            conn.begin()
            conn.execute(sa.text("SET LOCAL lock_timeout = '2s'"))
            job = claim_row(conn, owner, lease)
            taken.append(job.build_id if job is not None else None)
        for conn in (a, b, c):
            conn.commit()

    assert taken == ids

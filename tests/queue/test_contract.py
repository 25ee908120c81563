"""The Queue contract, run over SqlQueue (SQLite, PostgreSQL) and PubSubQueue (PostgreSQL +
the Pub/Sub emulator): what a worker may rely on, whichever queue is configured."""

from __future__ import annotations

import threading
import time
from collections import Counter as Tally

from tests.queue.conftest import Stack, job, new_build, publish
from trainhook.models import jobs
from trainhook.queue import Job


def claim_within(stack: Stack, runtime, owner: str, seconds: float) -> Job | None:
    """Claim, retrying for up to `seconds` (a Pub/Sub redelivery takes a moment)."""
    deadline = time.monotonic() + seconds
    while True:
        claimed = runtime.queue.claim(owner)
        if claimed is not None or time.monotonic() >= deadline:
            return claimed
        runtime.queue.wait(0.1)


def test_claim_then_complete(stack: Stack):
    runtime = stack.runtime()
    build_id = new_build(stack.engine)
    publish(runtime, [build_id])

    claimed = claim_within(stack, runtime, "w1", 10)

    assert claimed is not None
    assert (claimed.build_id, claimed.attempts, claimed.owner) == (build_id, 1, "w1")
    assert runtime.queue.heartbeat(claimed) is True
    runtime.queue.complete(claimed)
    runtime.queue.complete(claimed)  # idempotent
    row = job(stack.engine, build_id)
    assert (row.status, row.lease_until) == ("done", None)
    assert runtime.queue.claim("w2") is None
    assert runtime.queue.heartbeat(claimed) is False


def test_two_claimers_never_get_one_job(stack: Stack):
    runtimes = [stack.runtime() for _ in range(4)]
    ids = [new_build(stack.engine, sha=f"{i:040x}", ref=f"refs/heads/b{i}") for i in range(12)]
    publish(runtimes[0], ids)
    if stack.pubsub:
        publish_again(stack, ids)  # duplicates with new message ids, as a relay may send
    taken: list[int] = []
    lock = threading.Lock()

    def claimer(index: int) -> None:
        misses = 0
        while misses < 2:
            claimed = runtimes[index].queue.claim(f"w{index}")
            if claimed is None:
                misses += 1
                continue
            with lock:
                taken.append(claimed.build_id)

    threads = [threading.Thread(target=claimer, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert Tally(taken).most_common(1)[0][1] == 1, f"a job was claimed twice: {taken}"
    assert sorted(taken) == sorted(ids)


def publish_again(stack: Stack, ids: list[int]) -> None:
    """Publish these jobs once more, as a relay that died before marking them would."""
    with stack.engine.begin() as conn:
        conn.execute(jobs.update().where(jobs.c.build_id.in_(ids)).values(published_at=None))
    publish(stack.runtime(), ids)


def test_expired_lease_is_reclaimed(stack: Stack):
    crashed_rt = stack.runtime(TRAINHOOK_LEASE_SECONDS="1")
    rescuer_rt = stack.runtime(TRAINHOOK_LEASE_SECONDS="1")
    build_id = new_build(stack.engine)
    publish(crashed_rt, [build_id])
    crashed = claim_within(stack, crashed_rt, "crashed", 10)
    assert crashed is not None
    # The holder goes silent: no heartbeat, no ack. With Pub/Sub the message comes back
    # when its ack deadline (the 10 s minimum here) runs out.
    rescued = claim_within(stack, rescuer_rt, "rescuer", 20)

    assert rescued is not None
    assert (rescued.build_id, rescued.attempts, rescued.owner) == (build_id, 2, "rescuer")
    assert crashed_rt.queue.heartbeat(crashed) is False
    crashed_rt.queue.complete(crashed)  # a lost lease: no effect
    assert job(stack.engine, build_id).status == "running"
    rescuer_rt.queue.complete(rescued)
    assert job(stack.engine, build_id).status == "done"


def test_release_with_delay_makes_it_claimable_again_later(stack: Stack):
    runtime = stack.runtime()
    build_id = new_build(stack.engine)
    publish(runtime, [build_id])
    first = claim_within(stack, runtime, "w1", 10)
    assert first is not None

    released_at = time.monotonic()
    runtime.queue.release(first, delay=4, error="registry unreachable")

    row = job(stack.engine, build_id)
    assert (row.status, row.lease_owner, row.last_error) == (
        "queued",
        None,
        "registry unreachable",
    )
    assert runtime.queue.claim("w2") is None  # not before the delay
    again = claim_within(stack, runtime, "w2", 15)
    assert again is not None and (again.build_id, again.attempts) == (build_id, 2)
    assert time.monotonic() - released_at >= 3.5


def test_release_without_delay_is_claimable_at_once(stack: Stack):
    runtime = stack.runtime()
    build_id = new_build(stack.engine)
    publish(runtime, [build_id])
    first = claim_within(stack, runtime, "w1", 10)
    assert first is not None

    started = time.monotonic()
    runtime.queue.release(first, error="worker stopped")  # shutdown: nack promptly
    again = claim_within(stack, runtime, "w2", 10)

    assert again is not None and again.build_id == build_id
    assert time.monotonic() - started < 3  # not an ack-deadline expiry (10 s at least)


def test_bury_takes_the_job_out_for_good(stack: Stack):
    runtime = stack.runtime()
    build_id = new_build(stack.engine)
    publish(runtime, [build_id])
    claimed = claim_within(stack, runtime, "w1", 10)
    assert claimed is not None

    runtime.queue.bury(claimed, "gave up: boom")

    row = job(stack.engine, build_id)
    assert (row.status, row.last_error) == ("dead", "gave up: boom")
    assert runtime.queue.claim("w2") is None
    if stack.pubsub:
        assert row.published_at is not None  # copied to the dead-letter topic

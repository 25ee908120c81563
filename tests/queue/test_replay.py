"""Replaying a day of builds over Pub/Sub: from the database (failed ones get a new attempt,
nothing is built twice) and by seeking the subscription (history redelivered, no new work)."""

from __future__ import annotations

import time

import sqlalchemy as sa

from tests.queue.conftest import Counter, Stack, all_finished, new_build, run_workers
from tests.queue.test_pubsub import cli_env, pull_all
from trainhook import cli
from trainhook.db import reading
from trainhook.models import builds
from worker.context import BuildContext
from worker.stage import Outcome, StageFailed

BAD = {"b" * 40, "c" * 40}


def ack(clients, subscription: str, expected: int) -> None:
    received = []
    while len(received) < expected:
        batch = pull_all(clients, subscription)
        assert batch, f"{len(received)} of {expected} messages"
        received += batch
    clients.subscriber.acknowledge(
        request={"subscription": subscription, "ack_ids": [m.ack_id for m in received]}
    )


def statuses(stack: Stack) -> dict[int, tuple[str, int | None]]:
    with reading(stack.engine) as conn:
        rows = conn.execute(sa.select(builds.c.id, builds.c.status, builds.c.replay_of))
        return {row.id: (row.status, row.replay_of) for row in rows}


def test_replay_of_a_day_retries_failed_builds_and_builds_nothing_twice(
    pstack: Stack, monkeypatch, tmp_path, capsys
):
    fixed = False

    def flaky_tests(ctx: BuildContext) -> Outcome:
        if ctx.build.sha in BAD and not fixed:
            raise StageFailed("2 tests failed")
        return Outcome()

    cli_env(pstack, monkeypatch, tmp_path)
    runtime = pstack.runtime()
    clients = runtime.queue.clients  # type: ignore[attr-defined]
    # A second, unordered subscription on the topic keeps the whole day too: the emulator
    # cannot seek an ordered subscription to a time (Pub/Sub can), so --since is tried there.
    unordered = pstack.env["TRAINHOOK_PUBSUB_SUBSCRIPTION"] + "-unordered"
    clients.subscriber.create_subscription(
        request={
            "name": clients.subscriber.subscription_path("trainhook-test", unordered),
            "topic": clients.topic,
            "retain_acked_messages": True,
        }
    )
    shas = ["a" * 40, "b" * 40, "c" * 40, "d" * 40, "e" * 40, "f" * 40]
    day = [new_build(pstack.engine, sha, ref=f"refs/heads/f{i}") for i, sha in enumerate(shas)]
    runtime.queue.notify(day)
    counter = Counter({"test": flaky_tests})
    run_workers([pstack.runtime()], counter.pipeline(), all_finished(pstack.engine, 6))
    failed = sorted(b for b, (status, _) in statuses(pstack).items() if status == "failed")
    assert len(failed) == 2
    assert cli.main(["snapshot", "after-the-day"]) == 0
    capsys.readouterr()

    fixed = True
    assert cli.main(["replay", "--since", "1d"]) == 0
    out = capsys.readouterr().out
    assert "2 re-enqueued, 4 skipped" in out
    assert out.count("already succeeded") == 4
    run_workers([pstack.runtime()], counter.pipeline(), all_finished(pstack.engine, 8))

    after = statuses(pstack)
    assert len(after) == 8
    assert sorted(parent for _, parent in after.values() if parent) == failed
    assert all(status == "succeeded" for status, parent in after.values() if parent)
    assert all(counter.count(b, "checkout") == 1 for b in after)  # nothing ran twice

    # Again: the failed ones were replayed already, the rest succeeded: nothing to do.
    assert cli.main(["replay", "--since", "1d"]) == 0
    out = capsys.readouterr().out
    assert "0 re-enqueued, 8 skipped" in out and out.count("already replayed as build") == 2

    # Seek: Pub/Sub delivers history again; every job is finished, so nothing is rebuilt.
    assert cli.main(["replay", "--seek", "--snapshot", "after-the-day"]) == 0
    assert "seeked" in capsys.readouterr().out
    assert cli.main(["replay", "--seek", "--since", "1d"]) == 1  # ordered: emulator says no
    assert "--snapshot" in capsys.readouterr().err
    unordered_path = clients.subscriber.subscription_path("trainhook-test", unordered)
    ack(clients, unordered_path, 8)  # consumed: nothing left there
    monkeypatch.setenv("TRAINHOOK_PUBSUB_SUBSCRIPTION", unordered)
    assert cli.main(["replay", "--seek", "--since", "1d"]) == 0
    out = capsys.readouterr().out
    assert "8 job message(s) published since then will be delivered again: 8 finished" in out
    redelivered = pull_all(clients, unordered_path)
    assert sorted(int(m.message.attributes["build_id"]) for m in redelivered) == sorted(after)
    clients.subscriber.modify_ack_deadline(
        request={
            "subscription": unordered_path,
            "ack_ids": [m.ack_id for m in redelivered],
            "ack_deadline_seconds": 0,
        }
    )
    settle = time.monotonic() + 4
    workers = [pstack.runtime(), pstack.runtime(TRAINHOOK_PUBSUB_SUBSCRIPTION=unordered)]
    run_workers(workers, counter.pipeline(), lambda: time.monotonic() > settle)

    assert statuses(pstack) == after
    assert all(counter.count(b, "checkout") == 1 for b in after)
    for worker_rt in workers:
        queue = worker_rt.queue
        assert pull_all(queue.clients, queue.clients.subscription) == []  # type: ignore[attr-defined]

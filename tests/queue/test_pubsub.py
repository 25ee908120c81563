"""The Pub/Sub queue against the official emulator and PostgreSQL: setup, the outbox, at-least-
once delivery made idempotent by the database claim, dead letters."""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path

import pytest

from tests.queue.conftest import (
    Counter,
    Stack,
    all_finished,
    build_status,
    job,
    new_build,
    process_env,
    publish,
    run_workers,
)
from trainhook import cli
from trainhook.models import jobs, utcnow
from trainhook.queue.deadletters import list_dead, requeue
from trainhook.queue.outbox import ordering_key
from trainhook.queue.pubsubclients import PubSubClients
from worker.context import BuildContext
from worker.stage import Outcome


def cli_env(stack: Stack, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The environment a `trainhook` command would see for this stack."""
    for key, value in process_env(stack, tmp_path).items():
        monkeypatch.setenv(key, value)


def pull_all(clients: PubSubClients, subscription: str, wait: float = 2.0) -> list:
    from google.api_core import exceptions as gexc

    try:
        response = clients.subscriber.pull(
            request={"subscription": subscription, "max_messages": 50}, timeout=wait, retry=None
        )
    except gexc.DeadlineExceeded:
        return []
    return list(response.received_messages)


def test_setup_pubsub_creates_everything_once(pstack: Stack, monkeypatch, tmp_path, capsys):
    cli_env(pstack, monkeypatch, tmp_path)

    assert cli.main(["setup-pubsub"]) == 0  # the fixture made them already
    second = capsys.readouterr().out.splitlines()

    assert len(second) == 4 and all(line.endswith(": exists") for line in second), second
    settings = pstack.settings()
    clients = PubSubClients.from_settings(settings)
    try:
        sub = clients.subscriber.get_subscription(request={"subscription": clients.subscription})
        assert sub.enable_message_ordering and sub.retain_acked_messages
        assert sub.dead_letter_policy.dead_letter_topic == clients.dead_topic
        assert sub.dead_letter_policy.max_delivery_attempts == settings.pubsub_max_deliveries
        dead = clients.subscriber.get_subscription(
            request={"subscription": clients.dead_subscription}
        )
        assert dead.topic == clients.dead_topic
    finally:
        clients.close()


def test_notify_publishes_in_the_background_and_a_worker_runs_it(pstack: Stack):
    runtime = pstack.runtime()
    clients = runtime.queue.clients  # type: ignore[attr-defined]
    probe = clients.subscriber.subscription_path(
        "trainhook-test", "probe-" + pstack.env["TRAINHOOK_PUBSUB_TOPIC"]
    )
    clients.subscriber.create_subscription(request={"name": probe, "topic": clients.topic})
    build_id = new_build(pstack.engine, ref="refs/heads/main")

    started = time.monotonic()
    runtime.queue.notify([build_id])
    assert time.monotonic() - started < 0.05  # handed to the relay thread, never waited on
    counter = Counter()
    run_workers([pstack.runtime()], counter.pipeline(), all_finished(pstack.engine, 1))

    assert build_status(pstack.engine, build_id).status == "succeeded"
    assert counter.count(build_id) == 1
    row = job(pstack.engine, build_id)
    assert row.status == "done" and row.published_at is not None
    (seen,) = pull_all(clients, probe)
    assert dict(seen.message.attributes) == {"build_id": str(build_id), "attempt": "1"}
    assert seen.message.ordering_key == ordering_key("octo-org/social-score-api", "refs/heads/main")


def test_duplicate_delivery_makes_one_build(pstack: Stack):
    runtime = pstack.runtime()
    build_id = new_build(pstack.engine)
    publish(runtime, [build_id])
    with pstack.engine.begin() as conn:  # a second message for the same job (new message id)
        conn.execute(jobs.update().values(published_at=None))
    publish(runtime, [build_id])
    counter = Counter()

    run_workers([pstack.runtime(), pstack.runtime()], counter.pipeline(),
                all_finished(pstack.engine, 1))  # fmt: skip
    settle = time.monotonic() + 3  # let the duplicate be delivered and acked too
    run_workers([pstack.runtime()], counter.pipeline(), lambda: time.monotonic() > settle)

    assert {stage: counter.count(build_id, stage) for stage in ("checkout", "vertex")} == {
        "checkout": 1,
        "vertex": 1,
    }
    assert (job(pstack.engine, build_id).status, job(pstack.engine, build_id).attempts) == (
        "done",
        1,
    )
    assert pull_all(runtime.queue.clients, runtime.queue.clients.subscription) == []  # type: ignore[attr-defined]


def test_relay_killed_after_commit_the_sweeper_publishes_after_restart(pstack: Stack):
    build_id = new_build(pstack.engine)  # committed; the process died before notify
    assert job(pstack.engine, build_id).published_at is None

    restarted = pstack.runtime()
    restarted.start_background()  # the service's sweeper
    counter = Counter()
    run_workers([pstack.runtime()], counter.pipeline(), all_finished(pstack.engine, 1), 30)

    assert build_status(pstack.engine, build_id).status == "succeeded"
    assert job(pstack.engine, build_id).published_at is not None


def test_relay_killed_after_publish_before_marking_gives_one_build(pstack: Stack):
    dying = pstack.runtime()
    relay = dying.queue.relay  # type: ignore[attr-defined]

    def killed(build_ids: list[int]) -> None:
        raise RuntimeError("relay killed between publish and mark")

    relay._mark_published = killed
    build_id = new_build(pstack.engine)
    with pytest.raises(RuntimeError):
        relay.publish([build_id])  # on the topic, not marked
    assert job(pstack.engine, build_id).published_at is None
    restarted = pstack.runtime()
    assert restarted.queue.relay.sweep().published == []  # type: ignore[attr-defined]
    time.sleep(2.1)  # past the sweeper's grace period
    assert restarted.queue.relay.sweep().published == [build_id]  # type: ignore[attr-defined]
    counter = Counter()

    run_workers([pstack.runtime()], counter.pipeline(), all_finished(pstack.engine, 1))
    settle = time.monotonic() + 3
    run_workers([pstack.runtime()], counter.pipeline(), lambda: time.monotonic() > settle)

    assert counter.count(build_id, "checkout") == 1
    assert job(pstack.engine, build_id).attempts == 1


def broken(ctx: BuildContext) -> Outcome:
    raise ConnectionError("registry unreachable")


def test_poison_job_goes_to_the_dead_letter_topic_and_fails_the_build(pstack: Stack):
    settings = pstack.settings(TRAINHOOK_MAX_ATTEMPTS="2")
    runtime = pstack.runtime(TRAINHOOK_MAX_ATTEMPTS="2")
    build_id = new_build(pstack.engine)
    publish(runtime, [build_id])
    counter = Counter({"push": broken})

    run_workers([runtime], counter.pipeline(), all_finished(pstack.engine, 1), backoff=0.5)

    build = build_status(pstack.engine, build_id)
    assert build.status == "failed"
    assert build.error.startswith("gave up after 2 attempts: ConnectionError: registry")
    assert (job(pstack.engine, build_id).status, counter.count(build_id, "push")) == ("dead", 2)
    clients = PubSubClients.from_settings(settings)
    try:
        (dead,) = pull_all(clients, clients.dead_subscription)
        assert dead.message.attributes["build_id"] == str(build_id)
        assert "registry unreachable" in dead.message.attributes["reason"]
    finally:
        clients.close()
    (listed,) = list_dead(pstack.engine)
    assert (listed.build_id, listed.attempts, listed.requeued_as) == (build_id, 2, None)

    again = requeue(runtime.engine, runtime.queue, build_id)
    run_workers([pstack.runtime()], Counter().pipeline(), all_finished(pstack.engine, 2))

    assert build_status(pstack.engine, again).status == "succeeded"
    assert list_dead(pstack.engine)[0].requeued_as == again


def test_dead_letters_command_lists_and_requeues(pstack: Stack, monkeypatch, tmp_path, capsys):
    runtime = pstack.runtime()
    build_id = new_build(pstack.engine)
    publish(runtime, [build_id])
    claimed = runtime.queue.claim("w1")
    assert claimed is not None
    runtime.queue.bury(claimed, "gave up after 3 attempts: boom")
    cli_env(pstack, monkeypatch, tmp_path)

    assert cli.main(["dead-letters"]) == 0
    out = capsys.readouterr().out
    assert f"build {build_id} " in out and "boom" in out and "1 dead job(s)" in out
    assert "dead-letter subscription: build" in out  # the copy was read and acked

    assert cli.main(["dead-letters", "--requeue", str(build_id)]) == 0
    assert f"requeued build {build_id} as build" in capsys.readouterr().out
    assert cli.main(["dead-letters", "--requeue", "999"]) == 1


def test_a_dead_letter_pubsub_gave_up_on_fails_the_build(pstack: Stack):
    """Pub/Sub's own dead-letter policy (a job that kills every worker) is recorded: the
    forwarded message is published here as Pub/Sub forwards it (same attributes), because the
    emulator stalls an ordered subscription when its own policy fires."""
    runtime = pstack.runtime(TRAINHOOK_MAX_ATTEMPTS="1")
    build_id = new_build(pstack.engine)
    publish(runtime, [build_id])
    claimed = runtime.queue.claim("killed")
    assert claimed is not None
    with pstack.engine.begin() as conn:  # the worker died; its lease ran out
        conn.execute(jobs.update().values(lease_until=utcnow() - timedelta(seconds=1)))
    clients = runtime.queue.clients  # type: ignore[attr-defined]
    attrs = {"build_id": str(build_id), "CloudPubSubDeadLetterSourceDeliveryCount": "20"}
    clients.publisher.publish(clients.dead_topic, b"{}", **attrs).result(timeout=10)

    from trainhook.queue.deadletters import reconcile

    (line,) = reconcile(pstack.engine, clients, pstack.settings(TRAINHOOK_MAX_ATTEMPTS="1"))

    assert "dead-lettered by Pub/Sub after 20 deliveries" in line
    build = build_status(pstack.engine, build_id)
    assert build.status == "failed" and "20 deliveries" in build.error
    assert job(pstack.engine, build_id).status == "dead"

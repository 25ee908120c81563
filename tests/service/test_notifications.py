"""Build notifications reach Slack, Google Chat and signed webhooks exactly as each documents
them, once each, retried when the receiver is down or rate-limited, never touching the build;
against real HTTP receivers on loopback, on SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib
import hmac
import logging
import threading
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from starlette.testclient import TestClient

from service.app import create_app
from service.notifications import Notifier
from tests.service.receivers import Receiver, running
from trainhook.builds import (
    BuildSpec,
    add_event,
    append_log,
    create_build,
    mark_finished,
    mark_started,
)
from trainhook.errors import ConfigError
from trainhook.models import builds, notifications, utcnow
from trainhook.repos import read_repos
from trainhook.runtime import build_runtime
from trainhook.settings import Settings

SHA = "1f2e3d4c5b6a79881f2e3d4c5b6a79881f2e3d4c"
PUBLIC = "https://ci.example.org"
KEY = "notify-signing-key-" + "k" * 20


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    yield from running()


class Clock:
    def __init__(self) -> None:
        self.now = utcnow()

    def __call__(self):
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def configure(make_settings, receiver: Receiver) -> Callable[..., Settings]:
    def build(db_url: str, kind: str = "webhook", on: str | None = None) -> Settings:
        lines = [f'kind = "{kind}"', 'url_env = "NOTIFY_URL"']
        if kind == "webhook":
            lines.append('secret_env = "NOTIFY_KEY"')
        if on is not None:
            lines.append(f"on = {on}")
        extra = "[[repos.notify]]\n" + "\n".join(lines)
        env = {"NOTIFY_URL": receiver.url + "/hook/T000", "NOTIFY_KEY": KEY}
        return make_settings(db_url, extra=extra, env={**env, "TRAINHOOK_PUBLIC_URL": PUBLIC})

    return build


def finished(
    engine: sa.Engine,
    status: str,
    *,
    ref: str = "refs/heads/main",
    deployed: bool = False,
    author: str | None = "Ada <ada@example.org>",
    message: str = "Tune C & the <tokenizer>",
) -> int:
    with engine.begin() as conn:
        build_id = create_build(
            conn,
            BuildSpec(provider="github", repo="octo-org/social-score-api", ref=ref, sha=SHA,
                      author=author, commit_message=message),
        )  # fmt: skip
        mark_started(conn, build_id)
        if status == "failed":
            add_event(conn, build_id, "test", "running")
            for n in range(20):
                append_log(conn, build_id, "test", f"collected line {n}\n")
            append_log(conn, build_id, "test", "AssertionError: macro F1 0.41 < 0.8\n")
            add_event(conn, build_id, "test", "failed", detail="tests exited with 1")
        else:
            detail = "trained (cache miss), stored as key 0123abcd; macro F1 0.900"
            add_event(conn, build_id, "train", "succeeded", cache="miss", detail=detail)
            if deployed:
                add_event(conn, build_id, "deploy", "succeeded", detail="released v3")
        mark_finished(conn, build_id, status, "test failed" if status == "failed" else None)
    return build_id


def rows(engine: sa.Engine) -> list[sa.Row]:
    with engine.connect() as conn:
        return list(conn.execute(sa.select(notifications).order_by(notifications.c.id)))


def test_a_failure_reaches_a_webhook_signed_over_the_raw_body_with_everything_a_reader_needs(
    configure, db_url: str, engine: sa.Engine, receiver: Receiver
):
    settings = configure(db_url)
    build_id = finished(engine, "failed")
    assert Notifier(settings, engine).tick() == 1
    [got] = receiver.seen
    assert (got.method, got.path) == ("POST", "/hook/T000")
    assert got.headers["content-type"] == "application/json; charset=UTF-8"
    assert got.headers["x-trainhook-event"] == "failure"
    delivery = got.headers["x-trainhook-delivery"]
    assert str(uuid.UUID(delivery)) == delivery
    # A receiver verifies exactly as it would a GitHub hook: HMAC-SHA256 of the raw bytes.
    expected = "sha256=" + hmac.new(KEY.encode(), got.raw, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(got.headers["x-trainhook-signature-256"], expected)
    body = got.json
    assert body["event"] == "failure" and body["delivery"] == delivery
    build = body["build"]
    assert build["id"] == build_id and build["url"] == f"{PUBLIC}/builds/{build_id}"
    assert (build["repo"], build["branch"], build["sha"]) == (
        "octo-org/social-score-api", "main", SHA)  # fmt: skip
    assert build["author"] == "Ada <ada@example.org>"
    assert build["commit_url"] == f"https://github.com/octo-org/social-score-api/commit/{SHA}"
    assert build["failed_stage"] == "test" and build["status"] == "failed"
    # The last lines of the failed stage's log, not the whole log.
    tail = build["log_tail"].splitlines()
    assert tail[-1] == "AssertionError: macro F1 0.41 < 0.8"
    assert "collected line 0" not in build["log_tail"] and len(tail) == 12
    assert build["model"] == "not trained" and build["retrained"] is False
    [row] = rows(engine)
    assert (row.state, row.event, row.delivery, row.error) == ("sent", "failure", delivery, None)


def test_slack_gets_an_incoming_webhook_message_with_escaped_mrkdwn_and_a_build_link(
    configure, db_url: str, engine: sa.Engine, receiver: Receiver
):
    settings = configure(db_url, kind="slack")
    build_id = finished(engine, "failed")
    Notifier(settings, engine).tick()
    [got] = receiver.seen
    assert "x-trainhook-signature-256" not in got.headers
    body = got.json
    assert set(body) == {"text", "blocks"}
    assert body["text"] == f"octo-org/social-score-api build #{build_id} failed at test"
    head, rest = (block["text"] for block in body["blocks"])
    assert all(block["type"] == "section" for block in body["blocks"])
    assert head == {"type": "mrkdwn", "text": f"*<{PUBLIC}/builds/{build_id}|{body['text']}>*"}
    text = rest["text"]
    assert "Branch `main`" in text
    assert f"<https://github.com/octo-org/social-score-api/commit/{SHA}|{SHA[:12]}>" in text
    # &, < and > are markup in Slack: a commit message or author cannot make a link or mention.
    assert "by Ada &lt;ada@example.org&gt;" in text
    assert "Tune C &amp; the &lt;tokenizer&gt;" in text
    assert "```\n" in text and "AssertionError: macro F1 0.41 &lt; 0.8\n```" in text


def test_google_chat_gets_a_text_message_with_chat_links(
    configure, db_url: str, engine: sa.Engine, receiver: Receiver
):
    settings = configure(db_url, kind="google_chat", on='["success"]')
    build_id = finished(engine, "succeeded")
    Notifier(settings, engine).tick()
    [got] = receiver.seen
    body = got.json
    assert list(body) == ["text"]
    first, *rest = body["text"].splitlines()
    headline = f"octo-org/social-score-api build #{build_id} succeeded"
    assert first == f"*<{PUBLIC}/builds/{build_id}|{headline}>*"
    assert "Model: retrained" in rest


def test_default_events_are_failure_and_recovered_and_deployed_is_sent_only_when_deployed(
    configure, make_settings, db_url: str, engine: sa.Engine, receiver: Receiver
):
    settings = configure(db_url)
    finished(engine, "succeeded")  # nothing: success is not wanted by default
    finished(engine, "failed")
    finished(engine, "failed", ref="refs/heads/other")
    finished(engine, "succeeded")  # main recovers
    finished(engine, "succeeded")  # still fine: nothing
    notifier = Notifier(settings, engine)
    assert notifier.tick() == 3
    events = [(r.json["event"], r.json["build"]["branch"]) for r in receiver.seen]
    assert events == [("failure", "main"), ("failure", "other"), ("recovered", "main")]
    assert notifier.tick() == 0 and len(receiver.seen) == 3
    assert {r.state for r in rows(engine)} == {"sent", "skipped"}

    deployed = configure(db_url, on='["deployed"]')
    receiver.seen.clear()
    with engine.begin() as conn:
        conn.execute(notifications.delete())
    finished(engine, "succeeded", deployed=True)
    Notifier(deployed, engine).tick()
    assert [r.json["event"] for r in receiver.seen] == ["deployed"]


def test_a_rate_limited_message_is_retried_after_retry_after_with_the_same_delivery_id(
    configure, db_url: str, engine: sa.Engine, receiver: Receiver
):
    settings = configure(db_url, kind="slack")
    answers = iter([(429, {"Retry-After": "120"}), (503, {}), None])
    receiver.script = lambda got: next(answers)
    finished(engine, "failed")
    clock = Clock()
    notifier = Notifier(settings, engine, clock=clock)
    assert notifier.tick() == 0
    [row] = rows(engine)
    assert (row.state, row.attempts, row.error) == ("pending", 1, "HTTP 429")
    assert row.next_attempt_at >= clock.now + timedelta(seconds=119)
    clock.advance(60)
    assert notifier.tick() == 0 and len(receiver.seen) == 1  # not before Retry-After
    clock.advance(61)
    assert notifier.tick() == 0 and len(receiver.seen) == 2  # 503: retried with backoff
    clock.advance(600)
    assert notifier.tick() == 1
    [row] = rows(engine)
    assert (row.state, row.attempts, row.error) == ("sent", 3, None)
    assert len({r.raw for r in receiver.seen}) == 1  # the same message each time


def test_a_refusal_gives_up_at_once_and_the_url_never_reaches_the_log(
    configure, db_url: str, engine: sa.Engine, receiver: Receiver, caplog
):
    caplog.set_level(logging.DEBUG)
    settings = configure(db_url)
    receiver.script = lambda got: (404, {})
    finished(engine, "failed")
    notifier = Notifier(settings, engine)
    notifier.tick()
    notifier.tick()
    assert len(receiver.seen) == 1
    [row] = rows(engine)
    assert (row.state, row.error) == ("given_up", "gave up: HTTP 404")
    assert receiver.url not in caplog.text and "T000" not in caplog.text
    assert KEY not in caplog.text


def test_a_receiver_that_is_down_is_retried_and_never_touches_the_build(
    configure, db_url: str, engine: sa.Engine, receiver: Receiver
):
    settings = configure(db_url)
    receiver.server.shutdown()
    receiver.server.server_close()
    build_id = finished(engine, "failed")
    with engine.connect() as conn:
        before = conn.execute(sa.select(builds).where(builds.c.id == build_id)).one()
    Notifier(settings, engine).tick()
    [row] = rows(engine)
    assert (row.state, row.attempts, row.error) == ("pending", 1, "ConnectError")
    with engine.connect() as conn:
        assert conn.execute(sa.select(builds).where(builds.c.id == build_id)).one() == before


def test_two_replicas_ticking_at_once_send_each_notification_once(
    configure, db_url: str, engine: sa.Engine, receiver: Receiver
):
    settings = configure(db_url, on='["failure", "success"]')
    for n in range(6):
        finished(engine, "failed" if n % 2 else "succeeded")
    replicas = [Notifier(settings, engine) for _ in range(3)]
    start = threading.Barrier(len(replicas))

    def run(notifier: Notifier) -> None:
        start.wait()
        notifier.tick()

    threads = [threading.Thread(target=run, args=(r,)) for r in replicas]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for replica in replicas:
        replica.tick()
    ids = [r.json["build"]["id"] for r in receiver.seen]
    assert sorted(ids) == sorted(set(ids)) and len(ids) == 6


def test_the_service_sends_notifications_from_its_background(
    configure, sqlite_url: str, receiver: Receiver
):
    settings = configure(sqlite_url)
    runtime = build_runtime(settings)
    try:
        with TestClient(create_app(runtime)):
            build_id = finished(runtime.engine, "failed")
            [got] = receiver.wait_for(1)
            assert got.json["build"]["id"] == build_id
    finally:
        runtime.close()


def test_every_notify_problem_is_reported_at_once_naming_file_repo_entry_and_key(tmp_path: Path):
    config = tmp_path / "trainhook.toml"
    config.write_text(
        """
[[repos]]
name = "octo-org/a"
clone_url = "https://github.com/octo-org/a.git"
secret_env = "S"
[[repos.notify]]
kind = "teams"
url_env = "URL"
[[repos.notify]]
kind = "webhook"
url_env = "HOOK_URL"
on = ["failure", "broken"]
colour = "red"
[[repos.notify]]
kind = "slack"
url_env = "SLACK URL"
secret_env = "K"
"""
    )
    repos, problems = read_repos(config)
    text = "\n".join(problems)
    assert repos == ()
    where = f"{config}: repository 'octo-org/a': notify"
    assert f"{where} #1: key 'kind': got 'teams', expected one of 'slack'" in text
    assert f"{where} #2: unknown key 'colour'" in text
    assert f"{where} #2: missing required key 'secret_env'" in text
    assert f"{where} #2: key 'on': got ['failure', 'broken'], expected a list of" in text
    assert f"{where} #3: key 'url_env': got 'SLACK URL', expected a variable name" in text
    assert f"{where} #3: key 'secret_env': slack does not sign messages" in text


def test_prod_refuses_a_notify_entry_whose_url_is_not_set(make_settings, tmp_path: Path):
    with pytest.raises(ConfigError, match="notify variable NOTIFY_URL is not set"):
        make_settings(
            "postgresql+psycopg://u@db/trainhook",
            extra='[[repos.notify]]\nkind = "slack"\nurl_env = "NOTIFY_URL"',
            env={"TRAINHOOK_ENV": "prod", "TRAINHOOK_DASHBOARD_ACCESS": "token"},
        )

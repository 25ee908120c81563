"""Commit statuses: each build's status reaches the forge, exactly as each forge documents it."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy import event
from starlette.testclient import TestClient

from service.app import create_app
from service.forges.registry import api_base
from service.statusreporter import LEASE, StatusReporter
from tests.forges.fakeforge import FakeForge
from tests.service.forge_kits import GITHUB, post
from trainhook.builds import BuildSpec, add_event, create_build, mark_finished, mark_started
from trainhook.models import status_reports, utcnow
from trainhook.repos import RepoConfig
from trainhook.runtime import build_runtime
from trainhook.settings import Settings

TOKEN = "forge-token-" + "s3cr3t" * 6
SHA = "1f2e3d4c5b6a79881f2e3d4c5b6a79881f2e3d4c"
PUBLIC = "https://ci.example.org"
SUFFIX = {"github": "", "gitlab": "/api/v4", "gitea": "/api/v1", "forgejo": "/api/v1"}


@pytest.fixture
def configure(make_settings, forge: FakeForge) -> Callable[..., Settings]:
    def build(db_url: str, provider: str = "github", name: str = "octo-org/social-score-api"):
        extra = f'forge_token_env = "FORGE_TOKEN"\nforge_api_url = "{forge.url}{SUFFIX[provider]}"'
        env = {"FORGE_TOKEN": TOKEN, "TRAINHOOK_PUBLIC_URL": PUBLIC}
        return make_settings(db_url, provider=provider, name=name, extra=extra, env=env)

    return build


class Clock:
    def __init__(self) -> None:
        self.now = utcnow()

    def __call__(self):
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def new_build(engine, settings: Settings, sha: str = SHA, ref: str = "refs/heads/main") -> int:
    repo = settings.repos[0]
    with engine.begin() as conn:
        return create_build(
            conn, BuildSpec(provider=repo.provider, repo=repo.name, ref=ref, sha=sha)
        )


def finish(engine, build_id: int, status: str, error: str | None = None, hit: bool = False):
    with engine.begin() as conn:
        mark_started(conn, build_id)
        if status == "succeeded":
            detail = (
                "model cache hit: key 0123abcd produced by build #3; macro F1 0.900"
                if hit
                else "trained (cache miss), stored as key 0123abcd; macro F1 0.900"
            )
            add_event(conn, build_id, "train", "succeeded", cache="hit" if hit else "miss",
                      detail=detail)  # fmt: skip
        mark_finished(conn, build_id, status, error)


def report_row(engine, build_id: int):
    with engine.connect() as conn:
        return conn.execute(
            sa.select(status_reports).where(status_reports.c.build_id == build_id)
        ).one()


def test_github_gets_pending_then_success_saying_the_model_was_reused(
    db_url, engine, configure, forge
):
    settings = configure(db_url)
    reporter = StatusReporter(settings, engine)
    build_id = new_build(engine, settings)

    assert reporter.tick() == 1
    assert reporter.tick() == 0  # nothing new: nothing sent
    finish(engine, build_id, "succeeded", hit=True)
    assert reporter.tick() == 1

    first, last = forge.seen
    assert first.target == f"POST /repos/octo-org/social-score-api/statuses/{SHA}"
    assert first.headers["authorization"] == f"Bearer {TOKEN}"
    assert first.headers["accept"] == "application/vnd.github+json"
    assert first.headers["x-github-api-version"] == "2022-11-28"
    assert first.body == {
        "state": "pending",
        "description": f"build #{build_id} queued",
        "target_url": f"{PUBLIC}/builds/{build_id}",
        "context": "trainhook",
    }
    assert last.body["state"] == "success"
    assert last.body["description"] == (
        f"build #{build_id} succeeded: model reused from build #3 (cache hit)"
    )
    assert report_row(engine, build_id).status == "succeeded"


def test_github_failure_and_a_retrained_model_are_described(db_url, engine, configure, forge):
    settings = configure(db_url)
    reporter = StatusReporter(settings, engine)
    ok, bad = new_build(engine, settings), new_build(engine, settings, "b" * 40)
    finish(engine, ok, "succeeded")
    finish(engine, bad, "failed", "test failed: 2 tests failed " + "x" * 200)
    assert reporter.tick() == 2
    bodies = {s.path.rsplit("/", 1)[-1]: s.body for s in forge.seen}
    assert bodies[SHA]["state"] == "success"
    assert bodies[SHA]["description"] == f"build #{ok} succeeded: model retrained"
    assert bodies["b" * 40]["state"] == "failure"
    assert bodies["b" * 40]["description"].startswith(f"build #{bad} failed: test failed: 2 tests")
    assert len(bodies["b" * 40]["description"]) == 140


def test_gitlab_gets_running_and_failed_on_the_url_encoded_project(
    db_url, engine, configure, forge
):
    settings = configure(db_url, "gitlab", name="group/sub/social-score-api")
    reporter = StatusReporter(settings, engine)
    build_id = new_build(engine, settings)
    with engine.begin() as conn:
        mark_started(conn, build_id)
    reporter.tick()
    finish(engine, build_id, "failed", "train failed: quality gate refused")
    reporter.tick()

    running_, failed = forge.seen
    assert running_.path == f"/api/v4/projects/group%2Fsub%2Fsocial-score-api/statuses/{SHA}"
    assert running_.headers["private-token"] == TOKEN
    assert "authorization" not in running_.headers
    assert running_.body == {
        "state": "running",
        "description": f"build #{build_id} running",
        "target_url": f"{PUBLIC}/builds/{build_id}",
        "name": "trainhook",
        "ref": "main",
    }
    assert failed.body["state"] == "failed"
    assert (
        failed.body["description"]
        == f"build #{build_id} failed: train failed: quality gate refused"
    )


@pytest.mark.parametrize("provider", ["gitea", "forgejo"])
def test_gitea_and_forgejo_get_token_auth_and_warning_for_cancelled(
    sqlite_url, sqlite_engine, configure, forge, provider
):
    settings = configure(sqlite_url, provider)
    build_id = new_build(sqlite_engine, settings)
    finish(sqlite_engine, build_id, "cancelled", "cancelled by alice")
    StatusReporter(settings, sqlite_engine).tick()

    (seen,) = forge.seen
    assert seen.target == f"POST /api/v1/repos/octo-org/social-score-api/statuses/{SHA}"
    assert seen.headers["authorization"] == f"token {TOKEN}"
    assert seen.body == {
        "state": "warning",
        "description": f"build #{build_id} cancelled: cancelled by alice",
        "target_url": f"{PUBLIC}/builds/{build_id}",
        "context": "trainhook",
    }


@pytest.mark.parametrize(("provider", "state"), [("github", "success"), ("gitlab", "skipped")])
def test_a_build_that_only_touched_ignored_paths_does_not_block_the_commit(
    sqlite_url, sqlite_engine, configure, forge, provider, state
):
    settings = configure(sqlite_url, provider)
    build_id = new_build(sqlite_engine, settings)
    finish(sqlite_engine, build_id, "cancelled", "only ignored paths changed: docs/a.md (...)")
    StatusReporter(settings, sqlite_engine).tick()
    (seen,) = forge.seen
    assert seen.body["state"] == state
    assert seen.body["description"] == "not built: only ignored paths changed: docs/a.md (...)"


def test_a_rate_limit_is_waited_out_then_the_status_is_sent(db_url, engine, configure, forge):
    settings = configure(db_url)
    clock = Clock()
    reset = int(clock.now.timestamp()) + 120
    answers = [
        (403, {"message": "API rate limit exceeded"},
         {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(reset)}),
        (429, {"message": "secondary rate limit"}, {"Retry-After": "30"}),
        None,
    ]  # fmt: skip
    forge.handler = lambda seen: answers.pop(0)
    reporter = StatusReporter(settings, engine, clock=clock)
    build_id = new_build(engine, settings)

    assert reporter.tick() == 0
    row = report_row(engine, build_id)
    assert row.status is None and row.attempts == 1 and "rate limit" in row.error
    assert 100 <= (row.next_attempt_at - clock.now).total_seconds() <= 125  # ~ the reset
    clock.advance(60)
    assert reporter.tick() == 0 and len(forge.seen) == 1  # not yet
    clock.advance(65)
    assert reporter.tick() == 0 and len(forge.seen) == 2  # 429: 30 s more
    clock.advance(31)
    assert reporter.tick() == 1
    assert report_row(engine, build_id).status == "queued"
    assert len(forge.seen) == 3


def test_a_forge_that_is_down_is_retried_and_never_touches_the_build(
    sqlite_url, sqlite_engine, make_settings
):
    from tests.support.postgres import free_port

    extra = f'forge_token_env = "FORGE_TOKEN"\nforge_api_url = "http://127.0.0.1:{free_port()}"'
    settings = make_settings(sqlite_url, extra=extra, env={"FORGE_TOKEN": TOKEN})
    build_id = new_build(sqlite_engine, settings)
    assert StatusReporter(settings, sqlite_engine).tick() == 0
    row = report_row(sqlite_engine, build_id)
    assert row.attempts == 1 and row.next_attempt_at is not None and "ConnectError" in row.error
    with sqlite_engine.connect() as conn:
        assert conn.execute(sa.text("SELECT status FROM builds")).scalar() == "queued"


def test_a_refused_token_gives_that_status_up_without_showing_the_token(
    db_url, engine, configure, forge, caplog
):
    settings = configure(db_url)
    forge.handler = lambda seen: (401, {"message": "Bad credentials"})
    reporter = StatusReporter(settings, engine)
    build_id = new_build(engine, settings)
    with caplog.at_level(logging.DEBUG):
        assert reporter.tick() == 0
        assert reporter.tick() == 0
    assert len(forge.seen) == 1  # given up, not retried
    row = report_row(engine, build_id)
    assert row.status == "queued" and row.error.startswith("gave up: github status pending")
    assert "401 Bad credentials" in row.error
    assert TOKEN not in caplog.text and TOKEN not in row.error
    finish(engine, build_id, "succeeded")  # the next change is tried again
    forge.handler = lambda seen: None
    assert reporter.tick() == 1


def test_a_restart_neither_repeats_nor_loses_a_status(db_url, engine, configure, forge):
    settings = configure(db_url)
    build_id = new_build(engine, settings)
    assert StatusReporter(settings, engine).tick() == 1
    finish(engine, build_id, "succeeded")  # while no reporter runs

    again = StatusReporter(settings, engine)  # a new process
    assert again.tick() == 1
    assert again.tick() == 0
    assert [s.body["state"] for s in forge.seen] == ["pending", "success"]


def test_two_replicas_send_each_status_once(db_url, engine, configure, forge):
    settings = configure(db_url)
    clock = Clock()
    one = StatusReporter(settings, engine, clock=clock)
    two = StatusReporter(settings, engine, clock=clock)
    build_id = new_build(engine, settings)
    assert one._claim(build_id, clock.now)  # one claims, then dies before sending
    assert two.tick() == 0 and forge.seen == []
    clock.advance(LEASE.total_seconds() + 1)  # its lease runs out
    assert two.tick() == 1 and one.tick() == 0
    assert len(forge.seen) == 1


def test_gitlab_refusing_a_repeated_state_counts_as_sent(
    sqlite_url, sqlite_engine, configure, forge
):
    settings = configure(sqlite_url, "gitlab")
    message = "Cannot transition status via :enqueue from :pending (Reason(s): Status cannot ...)"
    forge.handler = lambda seen: (400, {"message": message})
    build_id = new_build(sqlite_engine, settings)
    assert StatusReporter(settings, sqlite_engine).tick() == 1
    row = report_row(sqlite_engine, build_id)
    assert (row.status, row.state, row.error) == ("queued", "pending", None)


def test_builds_of_repositories_without_a_token_are_not_reported(
    sqlite_url, sqlite_engine, make_settings, forge
):
    settings = make_settings(sqlite_url, extra=f'forge_api_url = "{forge.url}"')
    new_build(sqlite_engine, settings)
    reporter = StatusReporter(settings, sqlite_engine)
    assert not reporter.enabled and reporter.tick() == 0
    reporter.start().stop()
    assert forge.seen == []


def test_old_builds_are_not_reported_when_a_token_is_first_configured(
    sqlite_url, sqlite_engine, configure, forge
):
    settings = configure(sqlite_url)
    new_build(sqlite_engine, settings)
    with sqlite_engine.begin() as conn:
        old_time = utcnow().replace(tzinfo=None) - timedelta(days=5)
        conn.execute(sa.text("UPDATE builds SET created_at = :t"), {"t": old_time})
    assert StatusReporter(settings, sqlite_engine).tick() == 0
    assert forge.seen == []


def test_the_service_reports_a_pushed_build_in_the_background(db_url, engine, configure, forge):
    settings = configure(db_url)
    with TestClient(create_app(build_runtime(settings, engine))) as client:
        status, body = post(client, GITHUB, GITHUB.sign(GITHUB.push()))
        assert status == 202
        (seen,) = forge.wait_for(1, timeout=30)
    assert seen.body["state"] == "pending"
    assert seen.body["target_url"] == f"{PUBLIC}/builds/{body['build_id']}"


def test_a_build_committed_between_the_reporters_reads_is_reported(
    db_url, engine, configure, forge
):
    # What made the background test above flaky on PostgreSQL: the first tick found no build,
    # the webhook's build committed, and the next statement (a new snapshot under READ
    # COMMITTED) put the floor past it, so it was never reported. Here the build commits
    # right after the reporter's first statement, every time.
    settings = configure(db_url)
    reporter = StatusReporter(settings, engine)
    created: list[int] = []

    def commit_a_build_once(*_: object) -> None:
        if not created:
            created.append(0)  # before new_build: its own statements fire this hook too
            created[0] = new_build(engine, settings)

    event.listen(engine, "after_cursor_execute", commit_a_build_once)
    try:
        reporter.tick()
    finally:
        event.remove(engine, "after_cursor_execute", commit_a_build_once)
    reporter.tick()
    assert [(s.body["state"], s.body["target_url"]) for s in forge.seen] == [
        ("pending", f"{PUBLIC}/builds/{created[0]}")
    ]


def test_a_lower_build_id_committed_after_a_higher_one_is_reported(
    db_url, engine, configure, forge
):
    if engine.dialect.name != "postgresql":
        pytest.skip("SQLite writes one transaction at a time: ids commit in order")
    settings = configure(db_url)
    reporter = StatusReporter(settings, engine)
    repo = settings.repos[0]
    with engine.connect() as slow:
        with slow.begin():  # takes the lower id, commits after the higher one
            lower = create_build(
                slow,
                BuildSpec(provider=repo.provider, repo=repo.name, ref="refs/heads/a", sha="a" * 40),
            )
            higher = new_build(engine, settings)
            assert reporter.tick() == 1
        assert reporter.tick() == 1
    reported = {s.path.rsplit("/", 1)[-1] for s in forge.seen}
    assert lower < higher and reported == {SHA, "a" * 40}


@pytest.mark.parametrize(
    ("provider", "clone_url", "base"),
    [
        ("github", "https://github.com/o/r.git", "https://api.github.com"),
        ("github", "git@github.com:o/r.git", "https://api.github.com"),
        ("github", "https://ghe.example.com/o/r.git", "https://ghe.example.com/api/v3"),
        ("gitlab", "https://gitlab.example.com/g/s/r.git", "https://gitlab.example.com/api/v4"),
        (
            "gitlab",
            "ssh://git@gitlab.example.com:2222/g/r.git",
            "https://gitlab.example.com/api/v4",
        ),
        ("gitea", "http://gitea.local:3000/o/r.git", "http://gitea.local:3000/api/v1"),
        ("forgejo", "https://codeberg.org/o/r.git", "https://codeberg.org/api/v1"),
        ("github", "file:///srv/git/r.git", None),
    ],
)
def test_the_api_url_defaults_to_the_clone_url_host(provider, clone_url, base):
    repo = RepoConfig(name="o/r", clone_url=clone_url, secret_env="S", provider=provider)
    assert api_base(repo) == base


def test_an_explicit_api_url_wins():
    repo = RepoConfig(name="o/r", clone_url="https://github.com/o/r.git", secret_env="S",
                      forge_api_url="https://proxy.example/github/")  # fmt: skip
    assert api_base(repo) == "https://proxy.example/github"


def test_finished_and_reported_builds_are_not_read_again(
    sqlite_url, sqlite_engine, configure, forge
):
    settings = configure(sqlite_url)
    clock = Clock()
    reporter = StatusReporter(settings, sqlite_engine, clock=clock)
    done = [new_build(sqlite_engine, settings, c * 40) for c in "abc"]
    for build_id in done:
        finish(sqlite_engine, build_id, "succeeded")
    assert reporter.tick() == 3
    assert reporter.floor == done[0]  # just created: a lower id may still commit late
    clock.advance(11 * 60)
    reporter.tick()
    assert reporter.floor == done[-1] + 1
    later = new_build(sqlite_engine, settings, "d" * 40)
    assert reporter.tick() == 1 and reporter.floor == later
    assert len(forge.seen) == 4

"""Replays, dead-letter requeues and rebuilds run from the command line reach the database
directly, with no token to name anyone: each records the operating-system user and the host,
in the transaction that makes the build, and the build pages show it like any rebuild."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import sqlalchemy as sa
from starlette.testclient import TestClient

from service.app import create_app
from tests.conftest import SECRET
from tests.queue.conftest import new_build
from trainhook import cli
from trainhook.builds import mark_finished
from trainhook.db import make_engine
from trainhook.models import audit_events, builds, jobs
from trainhook.runtime import build_runtime
from trainhook.settings import Settings


@pytest.fixture
def command_env(
    sqlite_url: str, make_settings: Callable[..., Settings], tmp_path, monkeypatch
) -> Settings:
    """The environment a `trainhook` command sees, as the user `ada` on the host `ops-box`."""
    settings = make_settings(sqlite_url)  # writes the repositories file
    env = {
        "TRAINHOOK_HOME": str(tmp_path / "home"),
        "TRAINHOOK_CONFIG": str(tmp_path / "trainhook.toml"),
        "TRAINHOOK_DATABASE_URL": sqlite_url,
        "TEST_WEBHOOK_SECRET": SECRET,
        "TRAINHOOK_API_TOKEN": "test-token-0123456789",
        "TRAINHOOK_BUILDER": "bundle",
        "LOGNAME": "ada",  # getpass.getuser() reads it first
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("TRAINHOOK_URL", raising=False)
    monkeypatch.setattr("socket.gethostname", lambda: "ops-box")
    return settings


def audit_rows(engine: sa.Engine) -> list[tuple]:
    with engine.connect() as conn:
        return [
            tuple(row)
            for row in conn.execute(
                sa.select(
                    audit_events.c.action, audit_events.c.actor, audit_events.c.via,
                    audit_events.c.remote, audit_events.c.build_id, audit_events.c.result_build_id,
                ).order_by(audit_events.c.id)
            )
        ]  # fmt: skip


def newest_build(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.max(builds.c.id))).scalar_one())


def page(settings: Settings, build_id: int) -> str:
    runtime = build_runtime(settings)
    try:
        with TestClient(create_app(runtime)) as client:
            return client.get(f"/builds/{build_id}").text
    finally:
        runtime.close()


def test_a_replay_records_the_user_and_host_and_both_build_pages_show_it(
    command_env: Settings, sqlite_url: str
):
    engine = make_engine(sqlite_url)
    failed = new_build(engine)
    with engine.begin() as conn:
        mark_finished(conn, failed, "failed")
    assert cli.main(["replay", "--status", "failed"]) == 0
    new_id = newest_build(engine)
    assert new_id != failed
    assert audit_rows(engine) == [("replay", "ada", "cli", "ops-box", failed, new_id)]
    assert "ada (cli, from ops-box): replay made this build" in page(command_env, new_id)
    assert "ada (cli, from ops-box): replay · replay of build" in page(command_env, failed)

    assert cli.main(["replay", "--status", "failed", "--dry-run"]) == 0
    assert len(audit_rows(engine)) == 1  # a dry run does nothing, so records nothing
    engine.dispose()


def test_a_dead_letter_requeue_records_the_user_and_host(command_env: Settings, sqlite_url: str):
    engine = make_engine(sqlite_url)
    dead = new_build(engine)
    with engine.begin() as conn:
        conn.execute(jobs.update().where(jobs.c.build_id == dead).values(status="dead"))
        mark_finished(conn, dead, "failed")
    assert cli.main(["dead-letters", "--requeue", str(dead)]) == 0
    new_id = newest_build(engine)
    assert audit_rows(engine) == [("requeue", "ada", "cli", "ops-box", dead, new_id)]
    assert "ada (cli, from ops-box): requeue made this build" in page(command_env, new_id)
    engine.dispose()


def test_a_rebuild_run_against_the_database_records_the_user_and_host(
    command_env: Settings, sqlite_url: str
):
    engine = make_engine(sqlite_url)
    sha = "e" * 40
    assert cli.main(["rebuild", "octo-org/social-score-api", "--sha", sha, "--force"]) == 0
    new_id = newest_build(engine)
    assert audit_rows(engine) == [("rebuild --force", "ada", "cli", "ops-box", None, new_id)]
    engine.dispose()

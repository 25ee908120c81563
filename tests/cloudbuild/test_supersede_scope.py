"""Which builds a newer push supersedes: only older, still active builds of the same forge,
repository and branch whose deploy has not started; never a newer build, another
repository's or another branch's, and never for a tag."""

from __future__ import annotations

import logging
from typing import Any

import sqlalchemy as sa

from tests.worker.conftest import build_view, context_for, events
from trainhook.builds import BuildSpec, add_event, create_build, mark_finished, mark_started
from worker.cloudbuild.supersede import MARKER, stored_cloud_build, supersede_older

REPO = "octo-org/social-score-api"
PARENT = "projects/octo-project/locations/europe-west1"


class Client:
    """Cloud Build as the supersede step sees it: every build's deploy step is `deploy`."""

    def __init__(self, deploy: str = "QUEUED", readable: bool = True) -> None:
        self.deploy, self.readable = deploy, readable
        self.gets: list[str] = []
        self.cancels: list[str] = []

    def get_build(self, request: dict[str, str], timeout: float) -> Any:
        self.gets.append(request["name"])
        if not self.readable:
            raise RuntimeError("503 unavailable")
        step = type("Step", (), {"id": "deploy", "status": self.deploy})
        return type("Build", (), {"steps": [step]})

    def cancel_build(self, request: dict[str, str], timeout: float) -> None:
        self.cancels.append(request["name"])
        raise RuntimeError("already finished")  # never raised to the caller


def build(
    engine: sa.Engine,
    sha: str,
    *,
    repo: str = REPO,
    ref: str = "refs/heads/main",
    provider: str = "github",
    cloud_id: str | None = None,
) -> int:
    with engine.begin() as conn:
        build_id = create_build(conn, BuildSpec(provider, repo, ref, sha))
        if cloud_id:
            mark_started(conn, build_id)
            add_event(conn, build_id, "build", "pending", detail=f"{MARKER}{cloud_id} QUEUED")
    return build_id


def status(engine: sa.Engine, build_id: int) -> str:
    return str(build_view(engine, build_id)["status"])


def newer(make_settings, sqlite_url, engine, ref: str = "refs/heads/main", extra: str = ""):
    settings = make_settings(sqlite_url, branches=("*",), extra=extra)
    return context_for(settings, engine, build(engine, "f" * 40, ref=ref))


def test_only_older_builds_are_superseded_never_a_newer_one(
    make_settings, sqlite_url, sqlite_engine
):
    older = build(sqlite_engine, "a" * 40)
    ctx = newer(make_settings, sqlite_url, sqlite_engine)
    newest = build(sqlite_engine, "b" * 40)

    done = supersede_older(ctx, Client(), PARENT)

    assert done == [older]
    assert status(sqlite_engine, newest) == "queued"
    assert status(sqlite_engine, older) == "superseded"
    assert build_view(sqlite_engine, older)["error"] == (
        f"superseded by build #{ctx.build.id} ({'f' * 12})"
    )


def test_other_repositories_and_forges_builds_of_the_same_branch_are_left_alone(
    make_settings, sqlite_url, sqlite_engine
):
    other_repo = build(sqlite_engine, "a" * 40, repo="octo-org/another-api")
    other_forge = build(sqlite_engine, "a" * 40, provider="gitlab")
    other_branch = build(sqlite_engine, "a" * 40, ref="refs/heads/dev")
    mine = build(sqlite_engine, "a" * 40)
    ctx = newer(make_settings, sqlite_url, sqlite_engine)

    assert supersede_older(ctx, Client(), PARENT) == [mine]
    for left in (other_repo, other_forge, other_branch):
        assert status(sqlite_engine, left) == "queued"


def test_finished_builds_and_builds_past_deploy_are_left_alone(
    make_settings, sqlite_url, sqlite_engine
):
    finished = build(sqlite_engine, "a" * 40)
    deploying = build(sqlite_engine, "b" * 40)
    failed_deploy = build(sqlite_engine, "c" * 40)
    with sqlite_engine.begin() as conn:
        mark_finished(conn, finished, "succeeded")
        mark_started(conn, deploying)
        add_event(conn, deploying, "deploy", "running")
        mark_started(conn, failed_deploy)
        add_event(conn, failed_deploy, "deploy", "failed")
    running = build(sqlite_engine, "d" * 40)
    with sqlite_engine.begin() as conn:
        mark_started(conn, running)
        add_event(conn, running, "checkout", "running")
    ctx = newer(make_settings, sqlite_url, sqlite_engine)

    assert supersede_older(ctx, Client(), PARENT) == [running]
    assert [status(sqlite_engine, b) for b in (finished, deploying, failed_deploy)] == [
        "succeeded",
        "running",
        "running",
    ]
    # A started build's worker records what it will not run; only a queued one is skipped.
    assert ("queued", "skipped") not in events(sqlite_engine, running, "queued")


def test_a_cloud_build_not_yet_deploying_is_cancelled_by_its_full_name(
    make_settings, sqlite_url, sqlite_engine
):
    older = build(sqlite_engine, "a" * 40, cloud_id="cb-123")
    ctx = newer(make_settings, sqlite_url, sqlite_engine)
    client = Client(deploy="QUEUED")

    assert supersede_older(ctx, client, PARENT) == [older]
    assert client.gets == client.cancels == [f"{PARENT}/builds/cb-123"]


def test_a_cloud_build_deploying_or_unreadable_is_left_alone(
    make_settings, sqlite_url, sqlite_engine
):
    working = build(sqlite_engine, "a" * 40, cloud_id="cb-1")
    ctx = newer(make_settings, sqlite_url, sqlite_engine)

    assert supersede_older(ctx, Client(deploy="WORKING"), PARENT) == []
    assert supersede_older(ctx, Client(readable=False), PARENT) == []
    assert status(sqlite_engine, working) == "running"


def test_a_tag_build_supersedes_nothing(make_settings, sqlite_url, sqlite_engine):
    older = build(sqlite_engine, "a" * 40, ref="refs/tags/v1")
    ctx = newer(make_settings, sqlite_url, sqlite_engine, ref="refs/tags/v2")

    assert supersede_older(ctx, Client(), PARENT) == []
    assert status(sqlite_engine, older) == "queued"


def test_supersede_off_supersedes_nothing(make_settings, sqlite_url, sqlite_engine):
    older = build(sqlite_engine, "a" * 40)
    ctx = newer(make_settings, sqlite_url, sqlite_engine, extra="supersede = false")

    assert supersede_older(ctx, Client(), PARENT) == []
    assert status(sqlite_engine, older) == "queued"


def test_the_stored_cloud_build_id_is_the_latest_marker_of_the_build_stage(sqlite_engine):
    build_id = build(sqlite_engine, "a" * 40, cloud_id="cb-old")
    with sqlite_engine.begin() as conn:
        add_event(conn, build_id, "build", "pending", detail=f"{MARKER}cb-new WORKING")
        add_event(conn, build_id, "push", "pending", detail=f"{MARKER}cb-push")
        assert stored_cloud_build(conn, build_id) == "cb-new"
        other = create_build(conn, BuildSpec("github", REPO, "refs/heads/main", "b" * 40))
        assert stored_cloud_build(conn, other) is None


def test_an_older_build_left_alone_does_not_stop_the_next_from_being_superseded(
    make_settings, sqlite_url, sqlite_engine
):
    deploying = build(sqlite_engine, "a" * 40, cloud_id="cb-1")  # its Cloud Build deploys
    queued = build(sqlite_engine, "c" * 40)
    ctx = newer(make_settings, sqlite_url, sqlite_engine)

    assert supersede_older(ctx, Client(deploy="WORKING"), PARENT) == [queued]
    assert status(sqlite_engine, deploying) == "running"
    reason = f"superseded by build #{ctx.build.id} ({'f' * 12})"
    assert events(sqlite_engine, queued, "queued")[-1] == ("queued", "skipped")
    assert build_view(sqlite_engine, queued)["stages"][1]["detail"] == reason


def test_the_cloud_build_is_still_cancelled_after_its_build_stage_logged_more(
    make_settings, sqlite_url, sqlite_engine
):
    older = build(sqlite_engine, "a" * 40, cloud_id="cb-7")
    with sqlite_engine.begin() as conn:  # the tracker's later events of the build stage
        add_event(conn, older, "build", "running", detail="step build WORKING")
    ctx = newer(make_settings, sqlite_url, sqlite_engine)
    client = Client()

    assert supersede_older(ctx, client, PARENT) == [older]
    assert client.cancels == [f"{PARENT}/builds/cb-7"]


def test_a_finished_builds_cloud_build_is_neither_read_nor_cancelled(
    make_settings, sqlite_url, sqlite_engine
):
    finished = build(sqlite_engine, "a" * 40, cloud_id="cb-done")
    with sqlite_engine.begin() as conn:
        mark_finished(conn, finished, "failed", error="tests failed")
    ctx = newer(make_settings, sqlite_url, sqlite_engine)
    client = Client()

    assert supersede_older(ctx, client, PARENT) == []
    assert client.gets == client.cancels == []
    assert status(sqlite_engine, finished) == "failed"


class FinishesWhileRead(Client):
    """The older build's own worker ends it while its Cloud Build is being read."""

    def __init__(self, engine: sa.Engine, build_id: int) -> None:
        super().__init__()
        self.engine, self.build_id = engine, build_id

    def get_build(self, request: dict[str, str], timeout: float) -> Any:
        with self.engine.begin() as conn:
            mark_finished(conn, self.build_id, "succeeded")
        return super().get_build(request, timeout)


def test_an_older_build_ending_meanwhile_is_left_as_it_ended_and_the_next_is_superseded(
    make_settings, sqlite_url, sqlite_engine
):
    ending = build(sqlite_engine, "a" * 40, cloud_id="cb-1")
    queued = build(sqlite_engine, "c" * 40)
    ctx = newer(make_settings, sqlite_url, sqlite_engine)
    client = FinishesWhileRead(sqlite_engine, ending)

    assert supersede_older(ctx, client, PARENT) == [queued]
    assert status(sqlite_engine, ending) == "succeeded" and client.cancels == []
    assert status(sqlite_engine, queued) == "superseded"


def test_the_log_names_a_cloud_build_that_could_not_be_read_and_why(
    make_settings, sqlite_url, sqlite_engine, caplog
):
    build(sqlite_engine, "a" * 40, cloud_id="cb-1")
    ctx = newer(make_settings, sqlite_url, sqlite_engine)

    with caplog.at_level(logging.INFO, logger="worker.cloudbuild.supersede"):
        supersede_older(ctx, Client(readable=False), PARENT)

    assert [r.getMessage() for r in caplog.records] == [
        f"supersede: {PARENT}/builds/cb-1 unreadable (503 unavailable); left alone"
    ]


def test_the_log_names_a_cloud_build_whose_cancel_failed_and_why(
    make_settings, sqlite_url, sqlite_engine, caplog
):
    build(sqlite_engine, "a" * 40, cloud_id="cb-1")
    ctx = newer(make_settings, sqlite_url, sqlite_engine)

    with caplog.at_level(logging.INFO, logger="worker.cloudbuild.supersede"):
        supersede_older(ctx, Client(), PARENT)

    assert [r.getMessage() for r in caplog.records] == [
        f"supersede: cancel of {PARENT}/builds/cb-1: already finished"
    ]

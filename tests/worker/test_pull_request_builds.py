"""Pull request builds in the worker: the head is fetched from the configured clone URL by
the forge's request ref, and the build stops after `train`."""

from __future__ import annotations

import threading

import pytest

from tests.support.gitrepo import git
from tests.worker.conftest import build_view, context_for, stage_map, toy_pipeline
from trainhook.builds import BuildSpec, create_build
from trainhook.pullrequests import STOP_REASON
from trainhook.runtime import build_runtime
from worker.checkout import checkout_stage
from worker.context import BuildContext
from worker.loop import Worker
from worker.stage import Outcome

REPO = "octo-org/social-score-api"


def pull_build(engine, ref: str, sha: str, trigger: str = "pull_request") -> int:
    with engine.begin() as conn:
        return create_build(conn, BuildSpec("github", REPO, ref, sha, trigger=trigger))


def head_only_on(origin, ref: str, files: dict[str, str]) -> str:
    """A commit reachable from `ref` alone (as a forge keeps a request's head), not from
    any branch or tag."""
    main = origin.head()
    sha = origin.commit(files)
    git(origin.path, "update-ref", ref, sha)
    git(origin.path, "reset", "-q", "--hard", main)
    return sha


@pytest.mark.parametrize("trigger", ["pull_request", "replay", "rebuild"])
def test_a_request_head_build_runs_to_train_and_skips_every_builder_stage_saying_why(
    make_settings, sqlite_url, sqlite_engine, trigger
):
    settings = make_settings(sqlite_url)
    called: list[str] = []

    def builder_stage(ctx: BuildContext) -> Outcome:
        called.append("builder")
        return Outcome(detail="built")

    pipeline = toy_pipeline({s: builder_stage for s in ("build", "push", "deploy", "vertex")})
    build_id = pull_build(sqlite_engine, "refs/pull/7/head", "a" * 40, trigger)
    Worker(build_runtime(settings, sqlite_engine), pipeline=pipeline).run(
        threading.Event(), burst=True
    )
    stages = stage_map(sqlite_engine, build_id)
    assert build_view(sqlite_engine, build_id)["status"] == "succeeded"
    assert [stages[s]["status"] for s in ("checkout", "test", "hash", "train")] == ["succeeded"] * 4
    for stage in ("build", "push", "deploy", "vertex"):
        assert (stages[stage]["status"], stages[stage]["detail"]) == ("skipped", STOP_REASON)
    assert called == []


def test_a_branch_build_still_runs_the_builder(make_settings, sqlite_url, sqlite_engine):
    settings = make_settings(sqlite_url)
    build_id = pull_build(sqlite_engine, "refs/heads/main", "a" * 40, "push")
    Worker(build_runtime(settings, sqlite_engine), pipeline=toy_pipeline()).run(
        threading.Event(), burst=True
    )
    assert stage_map(sqlite_engine, build_id)["deploy"]["status"] == "succeeded"


@pytest.mark.parametrize("ref", ["refs/pull/7/head", "refs/merge-requests/3/head"])
def test_a_fresh_mirror_fetches_a_request_head_found_on_no_branch(
    origin, make_settings, sqlite_url, sqlite_engine, ref
):
    settings = make_settings(sqlite_url, clone_url=origin.url)
    origin.commit({"app.py": "print('main')\n"})
    sha = head_only_on(origin, ref, {"app.py": "print('proposed')\n"})

    ctx = context_for(settings, sqlite_engine, pull_build(sqlite_engine, ref, sha))
    detail = checkout_stage(ctx).detail or ""
    assert detail.startswith(f"{sha[:12]}: mirror cloned")
    assert ctx.source is not None
    assert (ctx.source / "app.py").read_text() == "print('proposed')\n"


def test_an_existing_mirror_fetches_a_newer_request_head(
    origin, make_settings, sqlite_url, sqlite_engine
):
    settings = make_settings(sqlite_url, clone_url=origin.url)
    first = origin.commit({"app.py": "print('main')\n"})
    checkout_stage(context_for(settings, sqlite_engine, pull_build(sqlite_engine, "x", first)))
    sha = head_only_on(origin, "refs/pull/9/head", {"app.py": "print('newer')\n"})

    ctx = context_for(settings, sqlite_engine, pull_build(sqlite_engine, "refs/pull/9/head", sha))
    assert "mirror fetched" in (checkout_stage(ctx).detail or "")
    assert ctx.source is not None
    assert (ctx.source / "app.py").read_text() == "print('newer')\n"

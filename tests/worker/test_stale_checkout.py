"""Stale pushes at checkout: a push (or replay) build of the deployed commit or of an ancestor
of it ends `superseded` before anything is exported, tested, trained or deployed. Rebuilds
(operator actions) still go back; a commit that is not behind the deployed one builds."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest
import sqlalchemy as sa

from tests.support.gitrepo import GitRepo, git
from tests.worker.conftest import build_view, events, job_row, stage_map, toy_pipeline
from trainhook.builds import BuildSpec, add_event, create_build, mark_finished
from trainhook.models import jobs
from trainhook.runtime import build_runtime
from trainhook.settings import Settings
from worker.checkout import Mirror, checkout_stage
from worker.context import BuildContext
from worker.loop import Worker
from worker.stage import Outcome

REPO = "octo-org/social-score-api"


def queue_build(engine: sa.Engine, sha: str, trigger: str = "push", force: bool = False) -> int:
    with engine.begin() as conn:
        spec = BuildSpec("github", REPO, "refs/heads/main", sha, trigger=trigger, force=force)
        return create_build(conn, spec)


def deployed_build(engine: sa.Engine, sha: str) -> int:
    """A build of `sha` on main whose deploy succeeded (as the worker records it)."""
    build_id = queue_build(engine, sha)
    with engine.begin() as conn:
        add_event(conn, build_id, "deploy", "succeeded", detail="released")
        mark_finished(conn, build_id, "succeeded")
        conn.execute(jobs.update().where(jobs.c.build_id == build_id).values(status="done"))
    return build_id


def run(settings: Settings, engine: sa.Engine) -> list[int]:
    """Run every queued build with the real checkout; returns the builds whose (toy)
    deploy stage ran."""
    deployed: list[int] = []

    def deploy(ctx: BuildContext) -> Outcome:
        deployed.append(ctx.build.id)
        return Outcome(detail="deployed")

    pipeline = toy_pipeline({"checkout": checkout_stage, "deploy": deploy})
    Worker(build_runtime(settings, engine), pipeline=pipeline).run(threading.Event(), burst=True)
    return deployed


@pytest.fixture
def history(origin: GitRepo) -> tuple[str, str]:
    """Two commits on main: (older, newer), the older an ancestor of the newer."""
    older = origin.commit({"app.py": "v = 1\n"})
    newer = origin.commit({"app.py": "v = 2\n"})
    return older, newer


@pytest.mark.parametrize("trigger", ["push", "replay"])
def test_a_build_of_an_ancestor_of_the_deployed_commit_ends_superseded(
    trigger: str,
    history: tuple[str, str],
    origin: GitRepo,
    make_settings: Callable[..., Settings],
    sqlite_url: str,
    sqlite_engine: sa.Engine,
):
    older, newer = history
    settings = make_settings(sqlite_url, clone_url=origin.url)
    deployed = deployed_build(sqlite_engine, newer)
    # Never built before, so the service could not tell it is older: only the mirror can.
    stale = queue_build(sqlite_engine, older, trigger)

    ran_deploy = run(settings, sqlite_engine)

    view = build_view(sqlite_engine, stale)
    reason = (
        f"stale {trigger}: {older[:12]} is an ancestor of the deployed {newer[:12]} "
        f"(build #{deployed}); `trainhook rebuild` deploys an older commit on purpose"
    )
    assert (view["status"], view["error"]) == ("superseded", reason)
    stages = stage_map(sqlite_engine, stale)
    assert stages["checkout"]["status"] == "succeeded"
    assert events(sqlite_engine, stale, "checkout")[-1] == ("checkout", "succeeded")
    assert ("checkout", "skipped") not in events(sqlite_engine, stale, "checkout")
    assert stages["checkout"]["detail"].endswith(f"; {reason}; nothing exported")
    for name in ("test", "hash", "train", "build", "push", "deploy", "vertex"):
        assert (stages[name]["status"], stages[name]["detail"]) == ("skipped", reason), name
    assert stale not in ran_deploy
    assert job_row(sqlite_engine, stale).status == "done"
    assert not list((settings.work_dir / settings.repos[0].slug).glob(f"b{stale}-*"))


def test_a_force_push_rewinding_the_branch_is_the_same_case(
    history: tuple[str, str],
    origin: GitRepo,
    make_settings: Callable[..., Settings],
    sqlite_url: str,
    sqlite_engine: sa.Engine,
):
    older, newer = history
    settings = make_settings(sqlite_url, clone_url=origin.url)
    deployed_build(sqlite_engine, newer)
    Mirror(settings.mirrors_dir, settings.repos[0]).ensure(newer)  # it built `newer`
    git(origin.path, "reset", "-q", "--hard", older)  # `git push --force` of an older commit
    rewound = queue_build(sqlite_engine, older)

    assert run(settings, sqlite_engine) == []
    assert build_view(sqlite_engine, rewound)["status"] == "superseded"


def test_a_push_of_the_deployed_commit_itself_ends_superseded(
    history: tuple[str, str],
    origin: GitRepo,
    make_settings: Callable[..., Settings],
    sqlite_url: str,
    sqlite_engine: sa.Engine,
):
    _, newer = history
    settings = make_settings(sqlite_url, clone_url=origin.url)
    deployed = deployed_build(sqlite_engine, newer)
    again = queue_build(sqlite_engine, newer)

    assert again not in run(settings, sqlite_engine)
    view = build_view(sqlite_engine, again)
    assert view["status"] == "superseded"
    assert view["error"] == f"stale push: {newer[:12]} is already deployed (build #{deployed})"


def test_a_rebuild_of_an_older_commit_still_deploys(
    history: tuple[str, str],
    origin: GitRepo,
    make_settings: Callable[..., Settings],
    sqlite_url: str,
    sqlite_engine: sa.Engine,
):
    older, newer = history
    settings = make_settings(sqlite_url, clone_url=origin.url)
    deployed_build(sqlite_engine, newer)
    rebuild = queue_build(sqlite_engine, older, "rebuild")

    assert run(settings, sqlite_engine) == [rebuild]
    assert build_view(sqlite_engine, rebuild)["status"] == "succeeded"


def test_a_forced_replay_of_an_older_commit_still_deploys(
    history: tuple[str, str],
    origin: GitRepo,
    make_settings: Callable[..., Settings],
    sqlite_url: str,
    sqlite_engine: sa.Engine,
):
    # `trainhook replay --force` is the operator's explicit choice, like a rebuild.
    older, newer = history
    settings = make_settings(sqlite_url, clone_url=origin.url)
    deployed_build(sqlite_engine, newer)
    replay = queue_build(sqlite_engine, older, "replay", force=True)

    assert run(settings, sqlite_engine) == [replay]


def test_a_newer_commit_and_one_on_a_rewritten_branch_still_deploy(
    history: tuple[str, str],
    origin: GitRepo,
    make_settings: Callable[..., Settings],
    sqlite_url: str,
    sqlite_engine: sa.Engine,
):
    older, newer = history
    settings = make_settings(sqlite_url, clone_url=origin.url)
    deployed_build(sqlite_engine, newer)
    descendant = queue_build(sqlite_engine, origin.commit({"app.py": "v = 3\n"}))
    assert run(settings, sqlite_engine) == [descendant]

    # A force-push that replaces history (not an ancestor of what is deployed) is new work.
    git(origin.path, "reset", "-q", "--hard", older)
    sibling = queue_build(sqlite_engine, origin.commit({"app.py": "v = 2, rewritten\n"}))
    assert run(settings, sqlite_engine) == [sibling]


def test_a_build_run_again_after_its_own_deploy_is_not_stale_against_itself(
    history: tuple[str, str],
    origin: GitRepo,
    make_settings: Callable[..., Settings],
    sqlite_url: str,
    sqlite_engine: sa.Engine,
):
    # Its deploy succeeded, a later stage failed, the job runs again: the deployed build of
    # the branch is this very build, which is not a reason to stop it.
    _, newer = history
    settings = make_settings(sqlite_url, clone_url=origin.url)
    again = queue_build(sqlite_engine, newer)
    with sqlite_engine.begin() as conn:
        add_event(conn, again, "deploy", "succeeded", detail="released")

    run(settings, sqlite_engine)

    assert build_view(sqlite_engine, again)["status"] == "succeeded"


def test_a_build_overtaken_by_a_newer_deploy_after_its_checkout_never_deploys(
    history: tuple[str, str],
    origin: GitRepo,
    make_settings: Callable[..., Settings],
    sqlite_url: str,
    sqlite_engine: sa.Engine,
    tmp_path,
):
    """Two workers: the older commit's build passed checkout while nothing was deployed, the
    newer one deployed meanwhile. The older build's deploy must not put it back."""
    from tests.worker.conftest import context_for
    from tests.worker.test_localbuilder import small_model
    from worker.local.builder import LocalBuilder
    from worker.local.release import Releases

    older, newer = history
    settings = make_settings(sqlite_url, clone_url=origin.url)
    ctx = context_for(settings, sqlite_engine, queue_build(sqlite_engine, older))
    checkout_stage(ctx)  # nothing deployed yet: it goes on
    ctx.model_dir = small_model(tmp_path / "model")
    newer_build = deployed_build(sqlite_engine, newer)

    LocalBuilder()(ctx)

    view = build_view(sqlite_engine, ctx.build.id)
    stages = stage_map(sqlite_engine, ctx.build.id)
    assert view["status"] == "superseded"
    assert stages["deploy"]["status"] == "skipped"
    assert f"build #{newer_build}" in stages["deploy"]["detail"]
    assert Releases(settings.home / "releases", ctx.repo.slug).current_version() is None

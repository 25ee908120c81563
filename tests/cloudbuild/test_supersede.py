"""A newer push to a branch supersedes its older builds that have not reached deploy."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from tests.cloudbuild.conftest import make_builder, ready
from tests.cloudbuild.fake_server import Plan
from tests.worker.conftest import build_view, events, new_build
from trainhook.builds import BuildSpec, add_event, create_build, mark_started
from worker.cloudbuild.supersede import MARKER

STEPS = [
    {"id": "build", "name": "docker"},
    {"id": "push", "name": "docker", "waitFor": ["build"]},
    {"id": "deploy", "name": "kubectl", "waitFor": ["push"]},
]


def running_with_cloud_build(fake: Any, engine: sa.Engine, at_seconds: float) -> tuple[int, Any]:
    """An older build whose worker submitted a Cloud Build now `at_seconds` into its run
    (build step 10-30 s, push 30-50 s, deploy from 50 s)."""
    build_id = new_build(engine, "a" * 40)
    remote = fake.create("octo-project", "europe-west1", {"steps": STEPS, "tags": ["x"]})
    remote.plan, remote.elapsed = Plan(tick=0.0), at_seconds
    with engine.begin() as conn:
        mark_started(conn, build_id)
        add_event(conn, build_id, "build", "pending", detail=f"{MARKER}{remote.id} QUEUED; logs x")
    return build_id, remote


def status(engine: sa.Engine, build_id: int) -> str:
    return str(build_view(engine, build_id)["status"])


def test_a_newer_push_supersedes_an_older_build_still_building(
    cloud_settings, engine, db_url, fake, tmp_path
):
    settings = cloud_settings(db_url=db_url)
    old, remote = running_with_cloud_build(fake, engine, at_seconds=15)
    ctx = ready(settings, engine, tmp_path, sha="b" * 40)

    make_builder(settings)(ctx)

    view = build_view(engine, old)
    assert view["status"] == "superseded"
    assert view["error"] == f"superseded by build #{ctx.build.id} ({'b' * 12})"
    assert fake.cancels == [remote.id] and remote.snapshot()["status"] == "CANCELLED"
    newer = {s["name"]: s["status"] for s in build_view(engine, ctx.build.id)["stages"]}
    assert newer["deploy"] == "succeeded"  # the newer one went on to deploy


def test_an_older_build_whose_cloud_build_is_deploying_is_left_alone(settings, db, fake, tmp_path):
    old, _ = running_with_cloud_build(fake, db, at_seconds=55)  # deploy step WORKING

    make_builder(settings)(ready(settings, db, tmp_path, sha="b" * 40))

    assert status(db, old) == "running" and fake.cancels == []


def test_an_older_build_recorded_as_deploying_is_left_alone(settings, db, fake, tmp_path):
    old, remote = running_with_cloud_build(fake, db, at_seconds=15)
    with db.begin() as conn:
        add_event(conn, old, "deploy", "running")

    make_builder(settings)(ready(settings, db, tmp_path, sha="b" * 40))

    assert status(db, old) == "running" and fake.cancels == []
    assert remote.gets == 0  # trainhook's own record was enough


def test_a_queued_older_build_is_superseded_before_any_worker_starts_it(
    settings, db, fake, tmp_path
):
    old = new_build(db, "a" * 40)

    make_builder(settings)(ready(settings, db, tmp_path, sha="b" * 40))

    assert status(db, old) == "superseded"
    assert events(db, old, "queued")[-1] == ("queued", "skipped")
    assert fake.cancels == []


def test_with_supersede_off_older_builds_run_on(cloud_settings, db, fake, tmp_path):
    settings = cloud_settings(extra="supersede = false\n")
    old, _ = running_with_cloud_build(fake, db, at_seconds=15)

    make_builder(settings)(ready(settings, db, tmp_path, sha="b" * 40))

    assert status(db, old) == "running" and fake.cancels == []


def test_builds_of_other_branches_are_not_superseded(settings, db, fake, tmp_path):
    with db.begin() as conn:
        spec = BuildSpec(
            provider="github", repo=settings.repos[0].name, ref="refs/heads/dev", sha="a" * 40
        )
        other = create_build(conn, spec)

    make_builder(settings)(ready(settings, db, tmp_path, sha="b" * 40))

    assert status(db, other) == "queued"

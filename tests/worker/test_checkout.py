"""The checkout stage against real git repositories."""

from __future__ import annotations

import os
import threading

import pytest

from tests.support.gitrepo import GitRepo, git
from tests.support.postgres import free_port
from tests.worker.conftest import build_view, context_for, new_build, stage_map, toy_pipeline
from trainhook.runtime import build_runtime
from worker.checkout import Mirror, checkout_stage
from worker.git import GitError, redact, scrub
from worker.loop import Worker
from worker.stage import StageFailed
from worker.workspace import Workspace


def checkout(settings, engine, sha: str):
    ctx = context_for(settings, engine, new_build(engine, sha))
    outcome = checkout_stage(ctx)
    return ctx, outcome


def test_mirror_is_cloned_then_fetched_then_reused(
    origin, make_settings, sqlite_url, sqlite_engine
):
    settings = make_settings(sqlite_url, clone_url=origin.url)
    first = origin.commit({"app.py": "print('v1')\n", "data/train.csv": "text,label\n"})

    ctx, outcome = checkout(settings, sqlite_engine, first)
    assert outcome.detail.startswith(f"{first[:12]}: mirror cloned")
    assert (ctx.source / "app.py").read_text() == "print('v1')\n"
    assert ctx.source.is_relative_to(settings.work_dir)
    assert ctx.mirror == settings.mirrors_dir / "github-octo-org--social-score-api.git"

    second = origin.commit({"app.py": "print('v2')\n"})
    ctx2, outcome2 = checkout(settings, sqlite_engine, second)
    assert "mirror fetched" in outcome2.detail
    assert (ctx2.source / "app.py").read_text() == "print('v2')\n"

    ctx3, outcome3 = checkout(settings, sqlite_engine, first)
    assert "mirror already present" in outcome3.detail
    assert (ctx3.source / "app.py").read_text() == "print('v1')\n"
    assert ctx3.source != ctx.source  # every build gets a fresh work dir


def test_fetch_uses_the_configured_clone_url_not_the_mirror_config(
    origin, tmp_path, make_settings, sqlite_url, sqlite_engine
):
    settings = make_settings(sqlite_url, clone_url=origin.url)
    checkout(settings, sqlite_engine, origin.commit({"a": "1"}))
    decoy = GitRepo(tmp_path / "decoy")
    decoy_sha = decoy.commit({"evil": "1"})
    mirror = Mirror(settings.mirrors_dir, settings.repos[0]).path
    git(mirror, "config", "remote.origin.url", decoy.url)

    wanted = origin.commit({"a": "2"})
    assert "mirror fetched" in checkout(settings, sqlite_engine, wanted)[1].detail
    with pytest.raises(Exception, match="not found"):
        checkout(settings, sqlite_engine, decoy_sha)


def test_hooks_in_the_mirror_are_never_run(
    origin, tmp_path, make_settings, sqlite_url, sqlite_engine
):
    settings = make_settings(sqlite_url, clone_url=origin.url)
    checkout(settings, sqlite_engine, origin.commit({"a": "1"}))
    mirror = Mirror(settings.mirrors_dir, settings.repos[0]).path
    marker = tmp_path / "hook-ran"
    hook = mirror / "hooks" / "reference-transaction"
    hook.write_text(f"#!/bin/sh\ntouch {marker}\n")
    hook.chmod(0o755)

    checkout(settings, sqlite_engine, origin.commit({"a": "2"}))
    assert not marker.exists()

    # Control: plain git does run this hook on fetch, so the check above means something.
    origin.commit({"a": "3"})
    git(mirror, "fetch", origin.url, "+refs/heads/*:refs/heads/*")
    assert marker.exists()


@pytest.mark.parametrize("target", ["/etc/passwd", "../../../outside.txt"])
def test_symlink_leaving_the_checkout_fails_checkout(
    target, origin, make_settings, sqlite_url, sqlite_engine
):
    settings = make_settings(sqlite_url, clone_url=origin.url)
    (origin.path / "docs").mkdir()
    os.symlink(target, origin.path / "docs" / "escape")
    os.symlink("../app.py", origin.path / "docs" / "inside")  # fine: stays inside
    sha = origin.commit({"app.py": "x = 1\n"})
    build_id = new_build(sqlite_engine, sha)
    runtime = build_runtime(settings, sqlite_engine)

    Worker(runtime, pipeline=toy_pipeline({"checkout": checkout_stage})).run(
        threading.Event(), burst=True
    )

    view = build_view(sqlite_engine, build_id)
    assert view["status"] == "failed"
    detail = stage_map(sqlite_engine, build_id)["checkout"]["detail"]
    assert "'docs/escape'" in detail and "refused" in detail
    assert stage_map(sqlite_engine, build_id)["test"]["status"] == "skipped"
    leftovers = list((settings.work_dir / settings.repos[0].slug).glob("b*"))
    assert [p for p in leftovers if p.is_dir()] == []


def test_unknown_commit_fails_checkout_with_a_clear_message(
    origin, make_settings, sqlite_url, sqlite_engine
):
    settings = make_settings(sqlite_url, clone_url=origin.url)
    origin.commit({"a": "1"})
    build_id = new_build(sqlite_engine, "deadbeef" * 5)
    runtime = build_runtime(settings, sqlite_engine)

    Worker(runtime, pipeline=toy_pipeline({"checkout": checkout_stage})).run(
        threading.Event(), burst=True
    )

    view = build_view(sqlite_engine, build_id)
    assert view["status"] == "failed"
    assert f"commit {'deadbeef' * 5} not found in {origin.url}" in view["error"]


def test_a_sha_that_is_not_hex_is_refused_before_git_sees_it(
    origin, make_settings, sqlite_url, sqlite_engine
):
    settings = make_settings(sqlite_url, clone_url=origin.url)
    origin.commit({"a": "1"})
    with pytest.raises(Exception, match="is not a commit id"):
        checkout(settings, sqlite_engine, "--upload-pack=touch /tmp/pwned")
    assert not settings.mirrors_dir.exists()


def test_old_work_dirs_are_removed_but_current_and_busy_ones_kept(
    origin, make_settings, sqlite_url, sqlite_engine
):
    settings = make_settings(sqlite_url, clone_url=origin.url)
    sha = origin.commit({"a": "1"})
    old, _ = checkout(settings, sqlite_engine, sha)
    old.cleanup.close()  # its build is over
    busy = Workspace(settings.work_dir / settings.repos[0].slug, "b99-busy")  # still running

    current, outcome = checkout(settings, sqlite_engine, sha)

    assert "1 old work dir(s) removed" in outcome.detail
    assert not old.source.exists()
    assert busy.path.exists() and current.source.exists()
    busy.release()
    current.cleanup.close()


def test_credentials_in_a_clone_url_are_never_shown(tmp_path, make_settings, sqlite_url):
    assert redact("https://bot:s3cret@github.com/o/r.git") == "https://github.com/o/r.git"
    assert redact("https://github.com/o/r.git") == "https://github.com/o/r.git"
    said = scrub("fatal: repository 'https://bot:s3cret@github.com/o/r.git/' not found")
    assert said == "fatal: repository 'https://github.com/o/r.git/' not found"
    # git's own messages echo the URL: they are scrubbed too.
    missing = f"http://bot:s3cret@127.0.0.1:{free_port()}/o/r.git"
    settings = make_settings(sqlite_url, clone_url=missing)
    with pytest.raises(GitError) as failure:
        Mirror(settings.mirrors_dir, settings.repos[0]).ensure("a" * 40)
    assert "s3cret" not in str(failure.value) and "127.0.0.1" in str(failure.value)


def test_rebuild_by_ref_checks_out_the_branch_head_and_records_its_sha(
    origin, make_settings, sqlite_url, sqlite_engine
):
    settings = make_settings(sqlite_url, clone_url=origin.url)
    origin.commit({"app.py": "print('v1')\n"})
    checkout(settings, sqlite_engine, origin.head())  # the mirror exists and is now stale
    head = origin.commit({"app.py": "print('v2')\n"})
    runtime = build_runtime(settings, sqlite_engine)
    from trainhook.triggers import request_rebuild

    build_id = request_rebuild(runtime, "octo-org/social-score-api", ref="main")
    ctx = context_for(settings, sqlite_engine, build_id)
    outcome = checkout_stage(ctx)
    assert (ctx.source / "app.py").read_text() == "print('v2')\n"
    assert f"refs/heads/main is {head[:12]}" in outcome.detail
    assert build_view(sqlite_engine, build_id)["sha"] == head


def test_rebuild_of_a_missing_branch_fails_checkout_naming_it(
    origin, make_settings, sqlite_url, sqlite_engine
):
    settings = make_settings(sqlite_url, clone_url=origin.url)
    origin.commit({"app.py": "1\n"})
    runtime = build_runtime(settings, sqlite_engine)
    from trainhook.triggers import request_rebuild

    build_id = request_rebuild(runtime, "octo-org/social-score-api", ref="nope")
    with pytest.raises(StageFailed, match="refs/heads/nope"):
        checkout_stage(context_for(settings, sqlite_engine, build_id))

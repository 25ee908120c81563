"""Stale pushes at checkout: the mirror tells what the service's database cannot.

The service ignores a push of the deployed commit, or of one an earlier build of the branch
had (trainhook/stale.py). It cannot tell that a commit it never saw is older than the
deployed one: here, with the commit in the mirror, a `push` or `replay` build whose commit
is the deployed one or a strict ancestor of it (`git merge-base --is-ancestor`), and is not forced
(`replay --force`, an operator's explicit choice), ends before
anything is exported. This covers a captured delivery of a commit that was never built, an
old commit pushed again, and a force-push that rewinds the branch: `trainhook rebuild` (an
operator action) is the way to deploy an older commit on purpose.

The build ends `superseded` (the deployed build supersedes it; a failure would be wrong,
nothing failed, and `cancelled` is what a person does): the checkout stage succeeds saying
so, every later stage is `skipped` with the same reason, and `trainhook replay` leaves
superseded builds alone unless forced. When ancestry cannot be read (the deployed commit is
gone from the mirror, a git error) the build goes on: this check never loses a build.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import sqlalchemy as sa

from trainhook.builds import STAGES, mark_finished
from trainhook.db import reading
from trainhook.models import builds
from trainhook.stale import GUARDED_TRIGGERS, Deployed, branch_history
from worker.context import BuildContext
from worker.git import GIT_OPTIONS, GIT_TIMEOUT, git_env


def is_ancestor(mirror: Path, older: str, newer: str) -> bool | None:
    """Whether commit `older` is an ancestor of `newer` in `mirror` (True also when they
    are the same commit); None when git cannot tell (a commit missing, an error)."""
    try:
        done = subprocess.run(
            ["git", *GIT_OPTIONS, "merge-base", "--is-ancestor", older, newer],
            cwd=mirror,
            env=git_env(""),
            capture_output=True,
            timeout=GIT_TIMEOUT,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        return None
    return {0: True, 1: False}.get(done.returncode)


def stale_reason(trigger: str, sha: str, deployed: Deployed, mirror: Path) -> str | None:
    """Why a `trigger` build of `sha` must not deploy over `deployed`, or None."""
    sha = sha.lower()
    where = f"(build #{deployed.build_id})"
    if sha == deployed.sha:
        return f"stale {trigger}: {sha[:12]} is already deployed {where}"
    if is_ancestor(mirror, sha, deployed.sha):
        return (
            f"stale {trigger}: {sha[:12]} is an ancestor of the deployed {deployed.short_sha} "
            f"{where}; `trainhook rebuild` deploys an older commit on purpose"
        )
    return None


def current_stale_reason(ctx: BuildContext, mirror: Path) -> str | None:
    """Why this build must not deploy now, or None: its trigger is guarded, it is not forced,
    and its commit is the branch's deployed one or an ancestor of it. Reads the database
    afresh, so a deploy that finished since the checkout counts."""
    with reading(ctx.engine) as conn:
        trigger = conn.execute(
            sa.select(builds.c.trigger).where(builds.c.id == ctx.build.id)
        ).scalar()
        if trigger not in GUARDED_TRIGGERS or ctx.build.force:
            return None  # an operator's rebuild, or a forced replay, may go back
        b = ctx.build
        deployed = branch_history(conn, b.provider, b.repo, b.ref, other_than=b.id).deployed
    if deployed is None:
        return None
    return stale_reason(str(trigger), ctx.build.sha, deployed, mirror)


def supersede_if_stale(ctx: BuildContext, mirror: Path) -> str | None:
    """Mark the build `superseded` when it would take its branch back; returns the reason,
    or None when the build goes on (also when someone else ended it meanwhile: the worker
    then stops at the next stage boundary)."""
    reason = current_stale_reason(ctx, mirror)
    if reason is None:
        return None
    with ctx.engine.begin() as conn:
        if not mark_finished(conn, ctx.build.id, "superseded", error=reason):
            return None
    return reason


def end_if_stale(ctx: BuildContext, mirror: Path) -> str | None:
    """End the build when it would take its branch back; returns the reason, or None when
    the build goes on. Called by the checkout stage once the commit is in the mirror."""
    reason = supersede_if_stale(ctx, mirror)
    if reason is None:
        return None
    for stage in ctx.recorder.stages:
        if STAGES.index(stage) > STAGES.index("checkout") and stage not in ctx.recorder.done:
            ctx.recorder.skip(stage, reason)
    return reason

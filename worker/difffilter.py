"""Path filters at checkout: the mirror's diff decides when the webhook could not.

The service answers `ignored` itself when the push payload lists every changed file (see
service/forges/payloadfilter.py). Otherwise the build is queued, and here, right after the
commit is in the mirror and before anything is exported, the files changed by the push are
read from git:

- an existing branch: `git diff before after` (the net change of the push, rewrites
  included: a force push that dropped commits counts the files it reverted);
- a new branch (`before` all zeros): the diff from the merge base with the repository's
  default branch (the mirror's HEAD) to `after`.

When every changed file is filtered out, the build ends early: it becomes `cancelled` with
the error "only ignored paths changed: …" (not `succeeded`: no model was trained, tested or
deployed for this commit, and history, cache provenance and "last deployed" must not say
otherwise; not `failed`: nothing went wrong), the checkout stage succeeds saying so, and every
later stage is `skipped` with the same reason. When the diff cannot be read (the `before`
commit is gone from the mirror, no default branch, unrelated histories, a git error) the
push builds: a filter only ever saves work, it never loses a build.

A pull/merge request build is filtered by the files its new commits changed, `git diff
before after` where the event named the previous head (GitHub `synchronize`, a GitLab update
that brought commits); an opened or reopened request, a Gitea/Forgejo one (whose payload names
no previous head), or one whose previous head is not in the mirror builds.

Only pushes to branches and request builds are filtered; tags, rebuilds, replays, schedules
and data builds always build.
"""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa

from trainhook.builds import STAGES, mark_finished
from trainhook.db import reading
from trainhook.models import builds
from worker.context import BuildContext
from worker.git import GitError, git

DIFF = ("diff", "--name-only", "--no-renames", "--no-ext-diff", "--no-textconv", "-z")


def _has_commit(mirror: Path, sha: str) -> bool:
    try:
        git("cat-file", "-e", f"{sha}^{{commit}}", cwd=mirror)
    except GitError:
        return False
    return True


def _base(mirror: Path, before: str | None, after: str) -> tuple[str | None, str]:
    """The commit to compare `after` with and how it was chosen (None: cannot tell)."""
    if before and set(before) != {"0"}:
        if not _has_commit(mirror, before):
            return None, f"the before commit {before[:12]} is not in the mirror"
        return before, f"{before[:12]}..{after[:12]}"
    try:
        default = git("symbolic-ref", "--quiet", "HEAD", cwd=mirror).strip()
        head = git("rev-parse", "--verify", "--end-of-options", f"{default}^{{commit}}",
                   cwd=mirror).strip()  # fmt: skip
    except GitError:
        return None, "new branch, and the default branch is unknown"
    try:
        base = git("merge-base", head, after, cwd=mirror).strip()
    except GitError:
        return None, f"new branch with no history in common with {default}"
    return base, f"new branch: {default} (merge base {base[:12]})..{after[:12]}"


def changed_files(
    mirror: Path, before: str | None, after: str
) -> tuple[frozenset[str] | None, str]:
    """The files the push changed and the range they come from; (None, why) when unknown."""
    base, basis = _base(mirror, before, after)
    if base is None:
        return None, basis
    try:
        out = git(*DIFF, base, after, "--", cwd=mirror)
    except GitError as exc:
        return None, str(exc)
    return frozenset(p for p in out.split("\0") if p), basis


def end_if_only_ignored(ctx: BuildContext, mirror: Path) -> str | None:
    """End the build when its push changed only filtered-out paths; returns the reason, or
    None when the build goes on. Called by the checkout stage once the commit is present."""
    flt = ctx.repo.path_filter
    if not flt.active:
        return None
    with reading(ctx.engine) as conn:
        row = conn.execute(
            sa.select(builds.c.trigger, builds.c.before_sha).where(builds.c.id == ctx.build.id)
        ).first()
    if row is None:
        return None
    branch_push = row.trigger == "push" and ctx.build.ref.startswith("refs/heads/")
    # A request's new commits only: with no previous head there is no "new" to compare
    # (the request's whole diff would need its base, which the event does not pin down).
    request_push = row.trigger == "pull_request" and bool(row.before_sha)
    if not (branch_push or request_push):
        if row.trigger == "pull_request":
            ctx.log("checkout", "path filters: the event names no previous head: building\n")
        return None
    files, basis = changed_files(mirror, row.before_sha, ctx.build.sha.lower())
    if files is None:
        ctx.log("checkout", f"path filters: cannot tell what changed ({basis}): building\n")
        return None
    listing = "".join(f"  {path}\n" for path in sorted(files)[:200])
    ctx.log("checkout", f"path filters: {len(files)} file(s) changed in {basis}\n{listing}")
    reason = flt.ignore_reason(files)
    if reason is None:
        return None
    with ctx.engine.begin() as conn:
        if not mark_finished(conn, ctx.build.id, "cancelled", error=reason):
            return None  # ended meanwhile by someone else: the worker stops at the boundary
    for stage in ctx.recorder.stages:
        if STAGES.index(stage) > STAGES.index("checkout") and stage not in ctx.recorder.done:
            ctx.recorder.skip(stage, reason)
    return reason

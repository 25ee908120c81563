"""Pull (merge) request builds: which refs they are, what they never do, and ending them.

A request's build is of the head the forge keeps in the base repository
(`refs/pull/N/head` on GitHub, Gitea and Forgejo, `refs/merge-requests/N/head` on GitLab),
stored as the build's ref with trigger `pull_request`. The ref alone says a build is of a
request, so a replay or a rebuild of such a ref is one too: it runs checkout, test, hash
and train, and never builds, pushes or deploys an image (the code is not merged, and may
come from a fork).

A newer head of the same request supersedes the request's older builds still queued or
running, and closing (or merging) the request supersedes them all; both are decided in the
transaction that records the delivery. The worker sees the terminal status at its next
stage boundary and stops. Stale-push rules (trainhook/stale.py) are for branches only.
"""

from __future__ import annotations

import re

import sqlalchemy as sa

from trainhook.builds import end_build
from trainhook.models import builds

# The refs a forge keeps a request's head under, in the base repository.
PULL_REF_RE = re.compile(r"refs/(?:pull|merge-requests)/([1-9][0-9]{0,9})/head")
# Why a request build stops after `train` (the detail of build, push, deploy and vertex).
STOP_REASON = (
    "pull request build: the candidate model is trained and compared only, "
    "never built, pushed or deployed"
)
ACTIVE = ("queued", "running")


def pull_number(ref: str) -> int | None:
    """The request number of a request head ref, None for any other ref."""
    found = PULL_REF_RE.fullmatch(ref)
    return int(found.group(1)) if found else None


def is_pull_ref(ref: str) -> bool:
    """True for a request head ref: its builds stop after `train`."""
    return pull_number(ref) is not None


def supersede_pull_builds(
    conn: sa.Connection,
    provider: str,
    repo: str,
    ref: str,
    reason: str,
    *,
    before: int | None = None,
) -> list[int]:
    """End every queued or running build of request head `ref` (older than build `before`,
    when given) as `superseded` with `reason`, in the caller's transaction. Returns their
    ids. Only request refs: a branch's builds are never ended here."""
    if not is_pull_ref(ref):
        raise ValueError(f"{ref!r} is not a pull request head ref")
    query = sa.select(builds.c.id).where(
        builds.c.provider == provider,
        builds.c.repo == repo,
        builds.c.ref == ref,
        builds.c.status.in_(ACTIVE),
    )
    if before is not None:
        query = query.where(builds.c.id < before)
    ended = []
    for build_id in conn.execute(query.order_by(builds.c.id)).scalars():
        if end_build(conn, build_id, "superseded", reason) == "superseded":
            ended.append(int(build_id))
    return ended

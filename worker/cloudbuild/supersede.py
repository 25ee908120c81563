"""Where a build's Cloud Build id is kept, and superseding older builds of the same branch.

The Cloud Build id is stored as the detail of a `pending` event of the `build` stage
(`Cloud Build id <id> …`), written the moment the id is known: no schema change, visible on
the status page with its log URL, and only a shortcut — the `trainhook-build-N` tag on the
Cloud Build is what makes a lost id recoverable.

Superseding runs in the newer build's worker just before it submits its own Cloud Build: an
older build of the same repository and branch that is still queued or running, and whose
`deploy` has not started (neither in trainhook's stage events nor in its Cloud Build's
steps), is marked `superseded` first, then its Cloud Build is cancelled. The older build's
worker sees the terminal status at its next stage boundary or poll and stops.
"""

from __future__ import annotations

import logging
import re
from typing import Any

import sqlalchemy as sa

from trainhook.builds import add_event, mark_finished
from trainhook.db import reading
from trainhook.models import builds, stage_events
from worker.context import BuildContext

log = logging.getLogger(__name__)

MARKER = "Cloud Build id "
MARKER_RE = re.compile(r"^Cloud Build id ([\w-]+)")
ACTIVE = ("queued", "running")
DEPLOY_STARTED = ("running", "succeeded", "failed")
STEP_NOT_STARTED = ("STATUS_UNKNOWN", "PENDING", "QUEUED")


def stored_cloud_build(conn: sa.Connection, build_id: int) -> str | None:
    """The Cloud Build id recorded for trainhook build `build_id`, or None."""
    rows = conn.execute(
        sa.select(stage_events.c.detail)
        .where(
            stage_events.c.build_id == build_id,
            stage_events.c.stage == "build",
            stage_events.c.detail.like(MARKER + "%"),
        )
        .order_by(stage_events.c.id.desc())
        .limit(1)
    ).scalar()
    match = MARKER_RE.match(rows or "")
    return match.group(1) if match else None


def _candidates(conn: sa.Connection, ctx: BuildContext) -> list[int]:
    """Older active builds of this repository and branch whose deploy has not started."""
    older = conn.execute(
        sa.select(builds.c.id).where(
            builds.c.repo == ctx.build.repo,
            builds.c.provider == ctx.build.provider,
            builds.c.ref == ctx.build.ref,
            builds.c.id < ctx.build.id,
            builds.c.status.in_(ACTIVE),
        )
    ).scalars()
    ids = list(older)
    if not ids:
        return []
    deploying = set(
        conn.execute(
            sa.select(stage_events.c.build_id).where(
                stage_events.c.build_id.in_(ids),
                stage_events.c.stage == "deploy",
                stage_events.c.status.in_(DEPLOY_STARTED),
            )
        ).scalars()
    )
    return [i for i in ids if i not in deploying]


def _never_picked_up(conn: sa.Connection, build_id: int) -> bool:
    """True while no worker has started the build (its last event is `queued` running); a
    started build's worker records the stages it will not run when it stops."""
    last = conn.execute(
        sa.select(stage_events.c.stage, stage_events.c.status)
        .where(stage_events.c.build_id == build_id)
        .order_by(stage_events.c.id.desc())
        .limit(1)
    ).first()
    return last is not None and (last.stage, last.status) == ("queued", "running")


def _deploy_started(client: Any, name: str) -> bool:
    """True when the Cloud Build `name` has started (or finished) its deploy step, or when
    that cannot be told (then it is left alone)."""
    from worker.cloudbuild.track import status_name

    try:
        remote = client.get_build(request={"name": name}, timeout=30)
    except Exception as exc:
        log.warning("supersede: %s unreadable (%s); left alone", name, exc)
        return True
    steps = {step.id: status_name(step.status) for step in remote.steps}
    return steps.get("deploy", "QUEUED") not in STEP_NOT_STARTED


def supersede_older(ctx: BuildContext, client: Any, parent: str) -> list[int]:
    """Supersede the older builds of `ctx`'s branch that have not reached deploy (when the
    repository allows it: `supersede = true`, the default). Returns their ids. Idempotent:
    a build already ended is left alone. Never raises for a Cloud Build that cannot be
    cancelled (it has finished meanwhile, or is gone)."""
    if not ctx.repo.supersede or not ctx.build.ref.startswith("refs/heads/"):
        return []
    with reading(ctx.engine) as conn:
        found = {i: stored_cloud_build(conn, i) for i in _candidates(conn, ctx)}
    done = []
    for old, cloud_id in sorted(found.items()):
        name = f"{parent}/builds/{cloud_id}" if cloud_id else None
        if name and _deploy_started(client, name):
            continue
        reason = f"superseded by build #{ctx.build.id} ({ctx.build.short_sha})"
        with ctx.engine.begin() as conn:
            if not mark_finished(conn, old, "superseded", error=reason):
                continue
            if _never_picked_up(conn, old):
                add_event(conn, old, "queued", "skipped", detail=reason)
        done.append(old)
        if name:
            try:
                client.cancel_build(request={"name": name}, timeout=30)
            except Exception as exc:  # finished meanwhile, or gone: nothing left to stop
                log.info("supersede: cancel of %s: %s", name, exc)
    return done

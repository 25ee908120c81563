"""Commit statuses: what a build's status looks like on each forge, and sending one.

One status per commit, context (GitLab: name) `trainhook`, updated as the build goes:

| build                            | GitHub  | GitLab   | Gitea / Forgejo |
|----------------------------------|---------|----------|-----------------|
| queued                           | pending | pending  | pending         |
| running                          | pending | running  | pending         |
| succeeded                        | success | success  | success         |
| failed                           | failure | failed   | failure         |
| cancelled, superseded            | error   | canceled | warning         |
| cancelled: only ignored paths    | success | skipped  | success         |

A push that changed only ignored paths is not a problem with the commit: it must not block a
merge that requires the `trainhook` check. The description says what happened: queued or
running, whether the model was reused from the cache (and from which build) or retrained,
or why the build failed; the link (`target_url`) is the build's page under
TRAINHOOK_PUBLIC_URL (none when that is not set).

This module says what a status says; each forge module holds its column of the table
(`status_state`) and sends the status as its API wants it (`send_status`).
"""

from __future__ import annotations

import re
from typing import Any

import httpx
import sqlalchemy as sa

from service.forges import Forge, ForgeApi, Report
from service.forges.api import request
from trainhook.models import stage_events
from trainhook.pathglobs import IGNORED

CONTEXT = "trainhook"
MAX_DESCRIPTION = 140  # GitHub's limit; the others allow more
KINDS = ("queued", "running", "succeeded", "failed", "cancelled", "superseded", "ignored")
PRODUCER = re.compile(r"produced by (build #\d+)")


def clip(text: str, limit: int = MAX_DESCRIPTION) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _model(conn: sa.Connection, build_id: int) -> str | None:
    """ "model reused from build #N" / "model retrained", from the train stage."""
    row = conn.execute(
        sa.select(stage_events.c.cache, stage_events.c.detail)
        .where(
            stage_events.c.build_id == build_id,
            stage_events.c.stage == "train",
            stage_events.c.status == "succeeded",
        )
        .order_by(stage_events.c.id.desc())
        .limit(1)
    ).first()
    if row is None:
        return None
    if row.cache == "hit":
        found = PRODUCER.search(row.detail or "")
        return f"model reused from {found.group(1)} (cache hit)" if found else "model reused"
    return "model retrained"


def describe(conn: sa.Connection, build: Any) -> tuple[str, str]:
    """(kind, description) of a build row (id, status, error): kind is the build status, or
    `ignored` for a push that changed only ignored paths."""
    status, error = build.status, (build.error or "").strip()
    if status in ("queued", "running"):
        return status, f"build #{build.id} {status}"
    if status == "succeeded":
        model = _model(conn, build.id)
        return status, f"build #{build.id} succeeded" + (f": {model}" if model else "")
    if status == "cancelled" and error.startswith(IGNORED):
        return "ignored", f"not built: {error}"
    if status == "superseded":
        return status, f"build #{build.id} superseded by a newer push"
    return status, f"build #{build.id} {status}" + (f": {error}" if error else "")


def report_for(conn: sa.Connection, forge: Forge, build: Any, public_url: str) -> Report:
    """The status to send to `forge` for a build row (id, sha, ref, status, error)."""
    kind, description = describe(conn, build)
    return Report(
        build_id=build.id,
        sha=build.sha,
        ref=build.ref,
        status=build.status,
        state=forge.status_state(kind),
        description=clip(description),
        target_url=f"{public_url}/builds/{build.id}" if public_url else None,
    )


def post(http: httpx.Client, api: ForgeApi, report: Report, **fields: str) -> None:
    """POST `report` to `…/statuses/{sha}` with the forge's own `fields` (its name for the
    context, a ref); raises ApiError (with `retry_after` when it may pass)."""
    body: dict[str, Any] = {"state": report.state, "description": report.description}
    if report.target_url:
        body["target_url"] = report.target_url
    body.update(fields)
    path = f"{api.repo_path}/statuses/{report.sha}"
    what = f"{api.provider} status {report.state} for {report.sha[:12]} of {api.repo}"
    request(http, api, "POST", api.url(path), what, body=body)

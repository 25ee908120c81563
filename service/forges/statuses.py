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
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import httpx
import sqlalchemy as sa

from service.forges.api import ApiError, ForgeApi, request
from trainhook.models import stage_events
from trainhook.pathglobs import IGNORED

CONTEXT = "trainhook"
MAX_DESCRIPTION = 140  # GitHub's limit; the others allow more
STATES = {
    "github": {"queued": "pending", "running": "pending", "succeeded": "success",
               "failed": "failure", "cancelled": "error", "superseded": "error",
               "ignored": "success"},
    "gitlab": {"queued": "pending", "running": "running", "succeeded": "success",
               "failed": "failed", "cancelled": "canceled", "superseded": "canceled",
               "ignored": "skipped"},
    "gitea": {"queued": "pending", "running": "pending", "succeeded": "success",
              "failed": "failure", "cancelled": "warning", "superseded": "warning",
              "ignored": "success"},
}  # fmt: skip
# GitLab refuses a state the status already has ("Cannot transition status via :run from
# :running"): the status was sent before (a restart between sending and recording it).
ALREADY = re.compile(r"cannot transition status", re.IGNORECASE)
PRODUCER = re.compile(r"produced by (build #\d+)")


@dataclass(frozen=True)
class Report:
    """One status to send for one build."""

    build_id: int
    sha: str
    ref: str
    status: str  # the build's status (what is recorded as reported)
    state: str  # the forge's word for it
    description: str
    target_url: str | None


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


def report_for(conn: sa.Connection, provider: str, build: Any, public_url: str) -> Report:
    """The status to send for a build row (id, sha, ref, status, error)."""
    kind, description = describe(conn, build)
    states = STATES["gitea" if provider == "forgejo" else provider]
    return Report(
        build_id=build.id,
        sha=build.sha,
        ref=build.ref,
        status=build.status,
        state=states[kind],
        description=clip(description),
        target_url=f"{public_url}/builds/{build.id}" if public_url else None,
    )


def _short_ref(ref: str) -> str | None:
    for prefix in ("refs/heads/", "refs/tags/"):
        if ref.startswith(prefix):
            return ref[len(prefix) :]
    return None


def send(http: httpx.Client, api: ForgeApi, report: Report) -> None:
    """POST the status; raises ApiError (with `retry_after` when it may pass)."""
    body: dict[str, Any] = {"state": report.state, "description": report.description}
    if report.target_url:
        body["target_url"] = report.target_url
    if api.provider == "gitlab":
        body["name"] = CONTEXT
        ref = _short_ref(report.ref)
        if ref:
            body["ref"] = ref
    else:
        body["context"] = CONTEXT
    path = f"{api.repo_path}/statuses/{report.sha}"
    what = f"{api.provider} status {report.state} for {report.sha[:12]} of {api.repo}"
    try:
        request(http, api, "POST", api.url(path), what, body=body)
    except ApiError as exc:
        if api.provider == "gitlab" and exc.status == 400 and ALREADY.search(str(exc)):
            return
        raise

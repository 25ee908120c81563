"""Builds started by hand (`POST /rebuild`, `trainhook rebuild`) rather than by a push."""

from __future__ import annotations

import re

import sqlalchemy as sa

from trainhook.builds import BuildSpec, create_build
from trainhook.errors import DatabaseUnavailable, TrainhookError
from trainhook.runtime import Runtime

SHA_RE = re.compile(r"^(?:[0-9a-f]{40}|[0-9a-f]{64})$")
REF_RE = re.compile(r"^[A-Za-z0-9._/+-]{1,240}$")


class TriggerError(TrainhookError):
    """A rebuild request that cannot be honoured; `status` is the HTTP answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def normalise_ref(ref: str) -> str:
    """`main` → `refs/heads/main`; full refs are kept. Raises TriggerError on odd refs."""
    if not REF_RE.match(ref) or ".." in ref or ref.endswith("/") or ref.startswith("-"):
        raise TriggerError(400, f"field 'ref': {ref!r} is not a valid git ref")
    return ref if ref.startswith("refs/") else f"refs/heads/{ref}"


def request_rebuild(
    runtime: Runtime,
    repo_name: str,
    *,
    ref: str | None = None,
    sha: str | None = None,
    force: bool = False,
) -> int:
    """Queue a build of `repo_name` at a ref (resolved by the worker) or at an exact sha.

    Returns the build id. Raises TriggerError (404 unknown repository, 400 bad ref/sha) or
    DatabaseUnavailable. Not idempotent by design: every call is a new build.
    """
    repo = runtime.settings.repo(repo_name)
    if repo is None:
        raise TriggerError(404, f"repository {repo_name!r} is not configured")
    if (ref is None) == (sha is None):
        raise TriggerError(400, "give exactly one of 'ref' or 'sha'")
    if sha is not None and not SHA_RE.match(sha):
        raise TriggerError(400, "field 'sha' must be a full 40- or 64-hex commit id")
    full_ref = normalise_ref(ref) if ref is not None else ""
    spec = BuildSpec(
        provider=repo.provider,
        repo=repo.name,
        ref=full_ref,
        sha=sha or "",
        trigger="rebuild",
        force=force,
    )
    try:
        with runtime.engine.begin() as conn:
            build_id = create_build(conn, spec)
    except sa.exc.DBAPIError:
        raise DatabaseUnavailable("database unavailable; nothing was queued") from None
    runtime.queue.notify([build_id])
    return build_id

"""The audit trail (`audit_events`): who did a write action, how, when and from where.

The service records its callers (a token's name, a session, a proxy's user); commands that
reach the database directly (replay, dead-letter requeue, a rebuild without TRAINHOOK_URL)
hold no token, so they record the operating-system user and the host they ran on."""

from __future__ import annotations

import getpass
import os
import socket
from dataclasses import dataclass

import sqlalchemy as sa

from trainhook.models import audit_events, utcnow


@dataclass(frozen=True)
class Actor:
    name: str
    via: str  # admin | token | cookie | proxy | cli
    remote: str | None = None  # the client's address, or the command's host


def cli_actor() -> Actor:
    """The person running a command here: their login name, from this host."""
    try:
        name = getpass.getuser()
    except (OSError, KeyError):  # no login name and no passwd entry (some containers)
        name = f"uid {os.getuid()}"
    return Actor(name, "cli", socket.gethostname())


def write(
    conn: sa.Connection,
    actor: Actor,
    action: str,
    *,
    build_id: int | None = None,
    result_build_id: int | None = None,
    detail: str | None = None,
) -> None:
    """One row, in the caller's transaction so it commits with the build it describes."""
    conn.execute(
        audit_events.insert().values(
            at=utcnow(), action=action, actor=actor.name[:255], via=actor.via,
            remote=(actor.remote or "")[:64] or None, build_id=build_id,
            result_build_id=result_build_id, detail=detail,
        )
    )  # fmt: skip

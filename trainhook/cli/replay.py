"""`trainhook replay`: queue past builds again, from the database (the system of record)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from trainhook.audit import Actor, cli_actor, write
from trainhook.builds import BuildSpec, create_build
from trainhook.errors import TrainhookError
from trainhook.models import builds, utcnow
from trainhook.runtime import Runtime

DURATION = re.compile(r"^(\d+)([smhd])$")
UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}
STATUSES = ("queued", "running", "succeeded", "failed", "cancelled", "superseded")


def parse_time(value: str, now: datetime | None = None) -> datetime:
    """`3d`, `12h`, `30m` (ago) or an ISO 8601 time (UTC when no offset is given)."""
    match = DURATION.match(value.strip())
    if match:
        amount, unit = int(match.group(1)), UNITS[match.group(2)]
        return (now or utcnow()) - timedelta(**{unit: amount})
    try:
        parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise TrainhookError(f"{value!r} is neither a duration (3d, 12h) nor an ISO time") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


@dataclass(frozen=True)
class ReplayFilter:
    since: datetime | None = None
    until: datetime | None = None
    status: str | None = None
    repo: str | None = None

    @classmethod
    def parse(
        cls, since: str | None, until: str | None, status: str | None, repo: str | None
    ) -> ReplayFilter:
        if status is not None and status not in STATUSES:
            raise TrainhookError(f"--status {status!r}: expected one of {', '.join(STATUSES)}")
        return cls(
            since=parse_time(since) if since else None,
            until=parse_time(until) if until else None,
            status=status,
            repo=repo,
        )


@dataclass
class ReplayReport:
    queued: list[tuple[int, int]] = field(default_factory=list)  # (old build, new build)
    skipped: list[tuple[int, str]] = field(default_factory=list)  # (build, why)

    def lines(self) -> list[str]:
        out = [f"re-enqueued build {old} as build {new}" for old, new in self.queued]
        out += [f"skipped build {bid}: {why}" for bid, why in self.skipped]
        out.append(f"{len(self.queued)} re-enqueued, {len(self.skipped)} skipped")
        return out


def _why_skip(status: str, force: bool) -> str | None:
    if status in ("queued", "running"):
        return f"still {status}; the queue will finish it"
    if status == "succeeded" and not force:
        return "already succeeded (use --force to build it again)"
    if status == "superseded" and not force:
        return "superseded by a newer push"
    return None


def _replayed(conn: sa.Connection, ids: list[int]) -> dict[int, tuple[int, str]]:
    """Build id -> (its newest replay, that replay's status), for those already replayed."""
    if not ids:
        return {}
    newest = (
        sa.select(builds.c.replay_of, sa.func.max(builds.c.id).label("child"))
        .where(builds.c.replay_of.in_(ids))
        .group_by(builds.c.replay_of)
        .subquery()
    )
    rows = conn.execute(
        sa.select(newest.c.replay_of, newest.c.child, builds.c.status).join(
            builds, builds.c.id == newest.c.child
        )
    )
    return {row.replay_of: (row.child, row.status) for row in rows}


def replay(
    runtime: Runtime,
    flt: ReplayFilter,
    *,
    force: bool = False,
    dry_run: bool = False,
    actor: Actor | None = None,
) -> ReplayReport:
    """Queue a new `replay` build for each matching failed/cancelled build (all with force).

    Idempotent: builds still in progress, builds already replayed (replay their replay
    instead) and a second build of a commit already replayed in this run are skipped, each
    with the reason. Never touches the original rows. The new builds' jobs go through the
    queue's `notify` (with Pub/Sub: the outbox). Each new build is audited, in its own
    transaction, as done by `actor` (default: the user running the command, from this host).
    """
    actor = actor or cli_actor()
    query = sa.select(builds).order_by(builds.c.id)
    if flt.since:
        query = query.where(builds.c.created_at >= flt.since)
    if flt.until:
        query = query.where(builds.c.created_at <= flt.until)
    if flt.status:
        query = query.where(builds.c.status == flt.status)
    if flt.repo:
        query = query.where(builds.c.repo == flt.repo)
    report = ReplayReport()
    with runtime.engine.connect() as conn:
        rows = conn.execute(query).all()
        replayed = _replayed(conn, [row.id for row in rows])
    commits: dict[tuple[str, str, str, str, bool], int] = {}
    for row in rows:
        why = _why_skip(row.status, force)
        if why is None and runtime.settings.repo(row.repo, row.provider) is None:
            why = "repository is no longer configured"
        if why is None and row.id in replayed:
            child, status = replayed[row.id]
            why = f"already replayed as build {child} ({status})"
        commit = (row.provider, row.repo, row.ref, row.sha, bool(row.force or force))
        if why is None and commit in commits:
            why = f"same commit as build {commits[commit]}, replayed once"
        if why is not None:
            report.skipped.append((row.id, why))
            continue
        commits[commit] = row.id
        if dry_run:
            report.queued.append((row.id, 0))
            continue
        spec = BuildSpec(
            provider=row.provider,
            repo=row.repo,
            ref=row.ref,
            sha=row.sha,
            before_sha=row.before_sha,
            trigger="replay",
            force=force,
            commit_message=row.commit_message,
            author=row.author,
            replay_of=row.id,
        )
        with runtime.engine.begin() as conn:
            new_id = create_build(conn, spec)
            write(conn, actor, "replay --force" if force else "replay", build_id=row.id,
                  result_build_id=new_id, detail=f"replay of build {row.id}")  # fmt: skip
        report.queued.append((row.id, new_id))
    if report.queued and not dry_run:
        runtime.queue.notify([new for _, new in report.queued])
    return report

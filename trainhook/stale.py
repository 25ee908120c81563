"""Stale pushes: a push never takes a branch back to an older commit than the one deployed.

GitHub signs the body of a delivery, not its `X-GitHub-Delivery` or `X-GitHub-Hook-ID`
headers (GitLab and Gitea sign nothing more), so a captured body and signature resent with a
new delivery id passes the signature check and the dedupe key. Without this, it was built
and deployed, putting an older commit over the newer one.

Decided twice:
- at intake (the service, which has no git mirror), from the database, inside the same
  transaction that records the delivery: a push of the commit last deployed on its branch,
  or of a commit an earlier build of the branch had before the last deployed one, is
  answered `ignored` with a `stale push: ...` reason and builds nothing;
- at checkout (the worker, which has the mirror): a push or replay build whose commit is the
  deployed one or a strict ancestor of it (`git merge-base --is-ancestor`) ends `superseded`
  without testing, training or deploying. This also catches a commit never built before
  (an older commit pushed again, a force-push that rewinds the branch).

"Deployed" is the newest build of the same provider, repository and ref whose `deploy` stage
succeeded. Only operator actions go back: `trainhook rebuild --sha` (and `rollback`). A
`replay` re-runs the stored commit of a failed build: it is held to the same rule, so a
bulk replay after an outage never rolls a branch back behind what was deployed meanwhile;
`replay --force` (like every forced build) is an explicit operator choice and may.
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa

from trainhook.models import builds, stage_events

# Builds that must not take their branch back, unless forced (operator actions may).
GUARDED_TRIGGERS = frozenset({"push", "replay"})


@dataclass(frozen=True)
class Deployed:
    """The last deployed build of a branch: its id and commit."""

    build_id: int
    sha: str

    @property
    def short_sha(self) -> str:
        return self.sha[:12]


def last_deployed(
    conn: sa.Connection, provider: str, repo: str, ref: str, *, other_than: int | None = None
) -> Deployed | None:
    """The newest build of `provider`/`repo`/`ref` whose `deploy` succeeded (excluding
    build `other_than`), or None. Walks the branch's builds newest first (the repository
    index), so the usual case — a recent build deployed — reads a few rows."""
    deployed = (
        sa.select(stage_events.c.id)
        .where(
            stage_events.c.build_id == builds.c.id,
            stage_events.c.stage == "deploy",
            stage_events.c.status == "succeeded",
        )
        .exists()
    )
    query = sa.select(builds.c.id, builds.c.sha).where(
        builds.c.repo == repo,
        builds.c.provider == provider,
        builds.c.ref == ref,
        builds.c.sha != "",
        deployed,
    )
    if other_than is not None:
        query = query.where(builds.c.id != other_than)
    row = conn.execute(query.order_by(builds.c.id.desc()).limit(1)).first()
    return None if row is None else Deployed(row.id, row.sha.lower())


def stale_reason(
    conn: sa.Connection, provider: str, repo: str, ref: str, sha: str, deployed: Deployed | None
) -> str | None:
    """Why a push of `sha` to `ref` is stale, decided from the database alone, or None.

    Stale: `sha` is the deployed commit, or an earlier build of the branch (before the
    deployed one) had `sha` — it is then older than what is deployed. A commit never built
    on this branch is not decided here (the worker's ancestry check is)."""
    if deployed is None or not sha:
        return None
    sha = sha.lower()
    if sha == deployed.sha:
        return f"stale push: {sha[:12]} is already deployed"
    earlier = conn.execute(
        sa.select(builds.c.id)
        .where(
            builds.c.repo == repo,
            builds.c.provider == provider,
            builds.c.ref == ref,
            builds.c.id < deployed.build_id,
            sa.func.lower(builds.c.sha) == sha,
        )
        .limit(1)
    ).first()
    if earlier is None:
        return None
    return f"stale push: {sha[:12]} is older than {deployed.short_sha} (build #{deployed.build_id})"

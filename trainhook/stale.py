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
# How many of a branch's newest builds are read. This runs inside the webhook writer's
# transaction, so it reads a bounded number of rows however long the history: a deploy or
# a build further back is not known here (the worker's ancestry check still is).
RECENT_BUILDS = 200


@dataclass(frozen=True)
class Deployed:
    """The last deployed build of a branch: its id and commit."""

    build_id: int
    sha: str

    @property
    def short_sha(self) -> str:
        return self.sha[:12]


@dataclass(frozen=True)
class BranchHistory:
    """What the database knows of a branch: its last deployed build, and the commits its
    builds had before that one (within the newest RECENT_BUILDS)."""

    deployed: Deployed | None
    before_deployed: frozenset[str]

    def stale_reason(self, sha: str) -> str | None:
        """Why a push of `sha` is stale, or None (a commit never built here is not decided
        from the database: the worker's ancestry check is)."""
        sha = sha.lower()
        if self.deployed is None or not sha:
            return None
        if sha == self.deployed.sha:
            return f"stale push: {sha[:12]} is already deployed"
        if sha in self.before_deployed:
            return (
                f"stale push: {sha[:12]} is older than {self.deployed.short_sha} "
                f"(build #{self.deployed.build_id})"
            )
        return None


def branch_history(
    conn: sa.Connection, provider: str, repo: str, ref: str, *, other_than: int | None = None
) -> BranchHistory:
    """The history of `provider`/`repo`/`ref`, leaving out build `other_than`. Two indexed
    queries: the branch's newest builds (by id), then which of them deployed. "Deployed" is
    the newest of them whose `deploy` stage succeeded."""
    query = sa.select(builds.c.id, builds.c.sha).where(
        builds.c.repo == repo, builds.c.provider == provider, builds.c.ref == ref
    )
    if other_than is not None:
        query = query.where(builds.c.id != other_than)
    recent = conn.execute(query.order_by(builds.c.id.desc()).limit(RECENT_BUILDS)).all()
    shas = {row.id: row.sha.lower() for row in recent if row.sha}
    if not shas:
        return BranchHistory(None, frozenset())
    newest = conn.execute(
        sa.select(sa.func.max(stage_events.c.build_id)).where(
            stage_events.c.build_id.in_(list(shas)),
            stage_events.c.stage == "deploy",
            stage_events.c.status == "succeeded",
        )
    ).scalar()
    if newest is None:
        return BranchHistory(None, frozenset())
    deployed = Deployed(int(newest), shas[newest])
    return BranchHistory(deployed, frozenset(s for i, s in shas.items() if i < newest))

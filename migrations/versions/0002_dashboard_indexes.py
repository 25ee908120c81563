"""dashboard indexes

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29 06:00:00.000000
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # GET /?branch=B (and the same filter on /api/builds and the exports) lists a branch's
    # builds newest first, keyset on id: `WHERE ref = ? AND id < ? ORDER BY id DESC LIMIT n`.
    # Without this index that is a backwards scan of the table until n rows match: for a rare
    # branch, most builds ever made (measured on SQLite: 1.2 ms at 10k builds, 7 ms at 100k,
    # linear in history) instead of 0.04-0.13 ms reading exactly the rows shown. With a
    # repository filter too, the planner may pick this or ix_builds_repo_id; either reads few
    # rows. The other dashboard reads need no new index: the live-update poller reads
    # stage_events and stage_logs by primary key (`id > last seen`), a build's events use
    # ix_stage_events_build_id_id, and a repository's history window uses ix_builds_repo_id.
    with op.batch_alter_table("builds", schema=None) as batch_op:
        batch_op.create_index("ix_builds_ref_id", ["ref", "id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("builds", schema=None) as batch_op:
        batch_op.drop_index("ix_builds_ref_id")

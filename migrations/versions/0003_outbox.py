"""pub/sub outbox: jobs.published_at

Revision ID: 0003_outbox
Revises: 0002
Create Date: 2026-11-29 06:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import trainhook.models

revision: str = "0003_outbox"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # The transactional outbox of the Pub/Sub queue: the webhook transaction writes the job
    # row (published_at NULL); a relay publishes it after commit and sets published_at. The
    # sweeper finds what is left through a partial index holding only unpublished rows.
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("published_at", trainhook.models.UTCDateTime(), nullable=True)
        )
    # Jobs already finished need no message, whichever queue ran them. Queued and running
    # ones stay unpublished: switching to TRAINHOOK_QUEUE=pubsub publishes them.
    op.execute("UPDATE jobs SET published_at = created_at WHERE status IN ('done', 'dead')")
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.create_index(
            "ix_jobs_unpublished",
            ["id"],
            unique=False,
            postgresql_where=sa.text("published_at IS NULL"),
            sqlite_where=sa.text("published_at IS NULL"),
        )


def downgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_index("ix_jobs_unpublished")
        batch_op.drop_column("published_at")

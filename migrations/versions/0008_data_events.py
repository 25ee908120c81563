"""data changes in Cloud Storage: data_events

Revision ID: 0008_data_events
Revises: 0007_schedule_runs
Create Date: 2026-12-02 10:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import trainhook.models

revision: str = "0008_data_events"
down_revision: str | None = "0007_schedule_runs"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UTC = trainhook.models.UTCDateTime


def upgrade() -> None:
    # One row per (repository, object generation) a bucket notification announced: the
    # unique key is what makes a redelivered Pub/Sub message or an event storm build once.
    op.create_table(
        "data_events",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("provider", sa.String(length=16), nullable=False),
        sa.Column("repo", sa.String(length=255), nullable=False),
        sa.Column("bucket", sa.String(length=222), nullable=False),
        sa.Column("object", sa.String(length=1024), nullable=False),
        sa.Column("generation", sa.BigInteger(), nullable=False),
        sa.Column("build_id", sa.Integer(), nullable=True),
        sa.Column("received_at", UTC(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_data_events")),
        sa.UniqueConstraint(
            "provider",
            "repo",
            "bucket",
            "object",
            "generation",
            name=op.f("uq_data_events_provider_repo_bucket_object_generation"),
        ),
    )


def downgrade() -> None:
    op.drop_table("data_events")

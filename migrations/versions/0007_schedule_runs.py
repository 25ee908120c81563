"""repository schedules: schedule_runs

Revision ID: 0007_schedule_runs
Revises: 0006_pull_comments
Create Date: 2026-12-09 09:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import trainhook.models

revision: str = "0007_schedule_runs"
down_revision: str | None = "0006_pull_comments"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UTC = trainhook.models.UTCDateTime


def upgrade() -> None:
    # One row per fired (repository, tick): the unique key is the claim that keeps several
    # service replicas from queueing a tick twice.
    op.create_table(
        "schedule_runs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("provider", sa.String(length=16), nullable=False),
        sa.Column("repo", sa.String(length=255), nullable=False),
        sa.Column("tick", UTC(), nullable=False),
        sa.Column("build_id", sa.Integer(), nullable=True),
        sa.Column("fired_at", UTC(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_schedule_runs")),
        sa.UniqueConstraint(
            "provider", "repo", "tick", name=op.f("uq_schedule_runs_provider_repo_tick")
        ),
    )


def downgrade() -> None:
    op.drop_table("schedule_runs")

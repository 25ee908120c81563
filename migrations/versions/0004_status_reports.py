"""commit statuses: status_reports

Revision ID: 0004_status_reports
Revises: 0003_outbox
Create Date: 2026-11-29 07:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import trainhook.models

revision: str = "0004_status_reports"
down_revision: str | None = "0003_outbox"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # What the commit-status reporter sent to the forge for each build (service/statusreporter.py).
    # It reads builds by id from a moving floor and joins this table by primary key: no index
    # beyond the key is needed.
    op.create_table(
        "status_reports",
        sa.Column("build_id", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=True),
        sa.Column("state", sa.String(length=16), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", trainhook.models.UTCDateTime(), nullable=True),
        sa.Column("claimed_by", sa.String(length=64), nullable=True),
        sa.Column("claimed_until", trainhook.models.UTCDateTime(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("updated_at", trainhook.models.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["build_id"], ["builds.id"], name=op.f("fk_status_reports_build_id_builds")
        ),
        sa.PrimaryKeyConstraint("build_id", name=op.f("pk_status_reports")),
    )


def downgrade() -> None:
    op.drop_table("status_reports")

"""pull request comments: train_results, pull_comments

Revision ID: 0006_pull_comments
Revises: 0005_team
Create Date: 2026-12-08 09:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import trainhook.models

revision: str = "0006_pull_comments"
down_revision: str | None = "0005_team"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UTC = trainhook.models.UTCDateTime


def upgrade() -> None:
    # What the train stage compared: candidate and deployed figures, the gate's verdict.
    # Read by build id only: the key is the index.
    op.create_table(
        "train_results",
        sa.Column("build_id", sa.Integer(), nullable=False),
        sa.Column("candidate", sa.Text(), nullable=False),
        sa.Column("deployed", sa.Text(), nullable=True),
        sa.Column("passed", sa.Boolean(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("recorded_at", UTC(), nullable=False),
        sa.ForeignKeyConstraint(
            ["build_id"], ["builds.id"], name=op.f("fk_train_results_build_id_builds")
        ),
        sa.PrimaryKeyConstraint("build_id", name=op.f("pk_train_results")),
    )
    # The one comment per pull/merge request (service/pullcomments.py); the unique key on the
    # request's head ref is what keeps two replicas from creating two comments.
    op.create_table(
        "pull_comments",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("provider", sa.String(length=16), nullable=False),
        sa.Column("repo", sa.String(length=255), nullable=False),
        sa.Column("ref", sa.String(length=255), nullable=False),
        sa.Column("comment_id", sa.String(length=64), nullable=True),
        sa.Column("build_id", sa.Integer(), nullable=True),
        sa.Column("posting", sa.Boolean(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", UTC(), nullable=True),
        sa.Column("claimed_by", sa.String(length=64), nullable=True),
        sa.Column("claimed_until", UTC(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("updated_at", UTC(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_pull_comments")),
        sa.UniqueConstraint(
            "provider", "repo", "ref", name=op.f("uq_pull_comments_provider_repo_ref")
        ),
    )


def downgrade() -> None:
    op.drop_table("pull_comments")
    op.drop_table("train_results")

"""The schema, as SQLAlchemy Core tables. Alembic migrations are the only way it is created."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
    }
)


class UTCDateTime(sa.TypeDecorator[datetime]):
    """Stored as naive UTC (portable across SQLite and Postgres), returned timezone-aware."""

    impl = sa.DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetimes are ambiguous; pass an aware UTC datetime")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


# One row per webhook delivery accepted (signature valid); the raw body is kept for audit/replay.
deliveries = sa.Table(
    "deliveries",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("provider", sa.String(16), nullable=False),
    sa.Column("hook_id", sa.String(64), nullable=False),
    sa.Column("delivery_id", sa.String(128), nullable=False),
    sa.Column("event", sa.String(64), nullable=False),
    sa.Column("repo", sa.String(255), nullable=False),
    sa.Column("received_at", UTCDateTime, nullable=False),
    sa.Column("headers", sa.Text, nullable=False),
    sa.Column("body", sa.LargeBinary, nullable=False),
    sa.Column("outcome", sa.String(16), nullable=False),  # queued | ignored
    sa.Column("reason", sa.Text, nullable=True),
    # Redeliveries carry the same (provider, hook, delivery) triple: this is the dedupe key.
    sa.UniqueConstraint("provider", "hook_id", "delivery_id"),
)

builds = sa.Table(
    "builds",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("delivery_id", sa.ForeignKey("deliveries.id"), nullable=True),
    sa.Column("provider", sa.String(16), nullable=False),
    sa.Column("repo", sa.String(255), nullable=False),
    sa.Column("ref", sa.String(255), nullable=False),
    sa.Column("sha", sa.String(64), nullable=False),
    sa.Column("before_sha", sa.String(64), nullable=True),
    sa.Column("trigger", sa.String(16), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("force", sa.Boolean, nullable=False, default=False),
    sa.Column("commit_message", sa.Text, nullable=True),
    sa.Column("author", sa.String(255), nullable=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("started_at", UTCDateTime, nullable=True),
    sa.Column("finished_at", UTCDateTime, nullable=True),
    sa.Column("cache_key", sa.String(64), nullable=True),
    sa.Column("error", sa.Text, nullable=True),
    sa.Column("replay_of", sa.ForeignKey("builds.id"), nullable=True),
    # The status page lists newest first per repository and per status (keyset on id).
    sa.Index("ix_builds_repo_id", "repo", "id"),
    sa.Index("ix_builds_status_id", "status", "id"),
    # The branch filter of the status page and API (migration 0002).
    sa.Index("ix_builds_ref_id", "ref", "id"),
    sa.Index("ix_builds_delivery_id", "delivery_id"),
)

# Append-only: a stage's state and duration are derived from its events, never updated in place.
stage_events = sa.Table(
    "stage_events",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("build_id", sa.ForeignKey("builds.id"), nullable=False),
    sa.Column("stage", sa.String(16), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("at", UTCDateTime, nullable=False),
    sa.Column("cache", sa.String(8), nullable=True),
    sa.Column("detail", sa.Text, nullable=True),
    sa.Index("ix_stage_events_build_id_id", "build_id", "id"),
)

stage_logs = sa.Table(
    "stage_logs",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("build_id", sa.ForeignKey("builds.id"), nullable=False),
    sa.Column("stage", sa.String(16), nullable=False),
    sa.Column("at", UTCDateTime, nullable=False),
    sa.Column("text", sa.Text, nullable=False),
    sa.Index("ix_stage_logs_build_id_stage_id", "build_id", "stage", "id"),
)

# The SQL queue: one row per build to run; a worker holds it by lease while it runs.
jobs = sa.Table(
    "jobs",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("build_id", sa.ForeignKey("builds.id"), nullable=False, unique=True),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("available_at", UTCDateTime, nullable=False),
    sa.Column("lease_owner", sa.String(64), nullable=True),
    sa.Column("lease_until", UTCDateTime, nullable=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("last_error", sa.Text, nullable=True),
    # The Pub/Sub outbox (migration 0003): when the job's message was published (to the jobs
    # topic while queued, to the dead-letter topic once dead); NULL = the relay still owes it.
    sa.Column("published_at", UTCDateTime, nullable=True),
    # Claims scan queued jobs in order and running jobs whose lease expired.
    sa.Index("ix_jobs_status_available_at", "status", "available_at"),
    # The outbox sweeper reads only the few rows not yet published.
    sa.Index(
        "ix_jobs_unpublished",
        "id",
        postgresql_where=sa.text("published_at IS NULL"),
        sqlite_where=sa.text("published_at IS NULL"),
    ),
)

# Commit statuses sent to the forge (migration 0004): one row per build of a repository with a
# forge token, holding the build status last reported, so a restart neither loses nor repeats
# a report. A reporter claims a row by lease before sending (several service replicas).
status_reports = sa.Table(
    "status_reports",
    metadata,
    sa.Column("build_id", sa.ForeignKey("builds.id"), primary_key=True),
    sa.Column("status", sa.String(16), nullable=True),  # build status reported (or given up)
    sa.Column("state", sa.String(16), nullable=True),  # the forge's state sent for it
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("next_attempt_at", UTCDateTime, nullable=True),
    sa.Column("claimed_by", sa.String(64), nullable=True),
    sa.Column("claimed_until", UTCDateTime, nullable=True),
    sa.Column("error", sa.Text, nullable=True),
    sa.Column("updated_at", UTCDateTime, nullable=False),
)

# Build notifications (migration 0005): one row per (build, `[[repos.notify]]` target) once
# the notifier has looked at the finished build, holding the event sent (or none due), the
# delivery id receivers dedupe on and where the delivery stands. A notifier claims a row by
# lease before sending (several service replicas), as status_reports.
notifications = sa.Table(
    "notifications",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("build_id", sa.ForeignKey("builds.id"), nullable=False),
    sa.Column("target", sa.String(300), nullable=False),  # kind:url_env
    sa.Column("event", sa.String(16), nullable=True),  # None: nothing this target wants
    sa.Column("state", sa.String(16), nullable=False),  # pending | sent | skipped | given_up
    sa.Column("delivery", sa.String(64), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("next_attempt_at", UTCDateTime, nullable=True),
    sa.Column("claimed_by", sa.String(64), nullable=True),
    sa.Column("claimed_until", UTCDateTime, nullable=True),
    sa.Column("error", sa.Text, nullable=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.UniqueConstraint("build_id", "target"),
)

# Per-person API tokens (`trainhook tokens add NAME`, migration 0005): only a SHA-256 of the
# token is kept (it is 256 random bits: no salt or slow hash is needed against guessing).
api_tokens = sa.Table(
    "api_tokens",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("name", sa.String(100), nullable=False, unique=True),
    sa.Column("scope", sa.String(8), nullable=False),  # read | write
    sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("revoked_at", UTCDateTime, nullable=True),
)

# Who did each write action (migration 0005): rebuilds, cancels, replays, requeues.
audit_events = sa.Table(
    "audit_events",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("at", UTCDateTime, nullable=False),
    sa.Column("action", sa.String(32), nullable=False),
    sa.Column("actor", sa.String(255), nullable=False),  # token name or proxy identity
    sa.Column("via", sa.String(16), nullable=False),  # admin | token | cookie | proxy | cli
    sa.Column("remote", sa.String(64), nullable=True),  # the client's address
    sa.Column("build_id", sa.ForeignKey("builds.id"), nullable=True),  # the build acted on
    sa.Column("result_build_id", sa.ForeignKey("builds.id"), nullable=True),  # the build made
    sa.Column("detail", sa.Text, nullable=True),
    sa.Index("ix_audit_events_build_id", "build_id"),
    sa.Index("ix_audit_events_result_build_id", "result_build_id"),
)

# Keys the service replicas share (migration 0005): the one signing login cookies and CSRF
# tokens is made by the first replica that needs it (insert-if-absent, then read).
service_keys = sa.Table(
    "service_keys",
    metadata,
    sa.Column("name", sa.String(32), primary_key=True),
    sa.Column("value", sa.String(128), nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
)

# What the train stage compared (migration 0006): the candidate model's figures and those of
# the model deployed when the quality gate ran, and its verdict. Written by the worker (once
# per build: a retried job overwrites it), read by the pull request comment.
train_results = sa.Table(
    "train_results",
    metadata,
    sa.Column("build_id", sa.ForeignKey("builds.id"), primary_key=True),
    sa.Column("candidate", sa.Text, nullable=False),  # JSON: trainhook/trainresults.py
    sa.Column("deployed", sa.Text, nullable=True),  # JSON; NULL: nothing was deployed
    sa.Column("passed", sa.Boolean, nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("recorded_at", UTCDateTime, nullable=False),
)

# The one comment on each pull/merge request (migration 0006), keyed by the request's head
# ref: the forge's id of the comment once created, the newest build it shows, and the
# delivery state. A commenter claims the row by lease before sending (several service
# replicas), as status_reports; `posting` marks a create whose answer was not recorded, so
# the next attempt looks for the comment before creating another.
pull_comments = sa.Table(
    "pull_comments",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("provider", sa.String(16), nullable=False),
    sa.Column("repo", sa.String(255), nullable=False),
    sa.Column("ref", sa.String(255), nullable=False),
    sa.Column("comment_id", sa.String(64), nullable=True),
    sa.Column("build_id", sa.Integer, nullable=True),  # shown (or given up); no FK: a marker
    sa.Column("posting", sa.Boolean, nullable=False, default=False),
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("next_attempt_at", UTCDateTime, nullable=True),
    sa.Column("claimed_by", sa.String(64), nullable=True),
    sa.Column("claimed_until", UTCDateTime, nullable=True),
    sa.Column("error", sa.Text, nullable=True),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.UniqueConstraint("provider", "repo", "ref"),
)

# One row per (repository, schedule tick) that fired (trainhook/schedules.py): inserting it is
# the claim, so of several service replicas exactly one queues the tick's build.
schedule_runs = sa.Table(
    "schedule_runs",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("provider", sa.String(16), nullable=False),
    sa.Column("repo", sa.String(255), nullable=False),
    sa.Column("tick", UTCDateTime, nullable=False),
    sa.Column("build_id", sa.Integer, nullable=True),  # no FK: a marker
    sa.Column("fired_at", UTCDateTime, nullable=False),
    sa.UniqueConstraint("provider", "repo", "tick"),
)

# One row per (repository, gs:// object generation) that a data event announced
# (trainhook/dataevents.py): the unique key makes a redelivered or repeated event build
# nothing more. `build_id` is the build it queued or joined (None: it arrived while nothing
# could build, say the repository left the configuration).
data_events = sa.Table(
    "data_events",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("provider", sa.String(16), nullable=False),
    sa.Column("repo", sa.String(255), nullable=False),
    sa.Column("bucket", sa.String(222), nullable=False),
    sa.Column("object", sa.String(1024), nullable=False),
    sa.Column("generation", sa.BigInteger, nullable=False),
    sa.Column("build_id", sa.Integer, nullable=True),  # no FK: a marker
    sa.Column("received_at", UTCDateTime, nullable=False),
    sa.UniqueConstraint("provider", "repo", "bucket", "object", "generation"),
)

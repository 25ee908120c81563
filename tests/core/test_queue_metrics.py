"""Queue figures read at scrape time: depth by status and the oldest waiting job's age."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from trainhook.builds import BuildSpec, create_build
from trainhook.metrics import queue_figures
from trainhook.models import jobs


def _queue(engine: sa.Engine, sha: str, *, age: float, delay: float = 0.0) -> None:
    now = datetime.now(UTC)
    with engine.begin() as conn:
        build_id = create_build(
            conn, BuildSpec(provider="github", repo="o/r", ref="refs/heads/main", sha=sha)
        )
        conn.execute(
            jobs.update()
            .where(jobs.c.build_id == build_id)
            .values(
                created_at=now - timedelta(seconds=age),
                available_at=now + timedelta(seconds=delay),
            )
        )


def test_an_empty_queue_is_zero_deep_and_zero_seconds_old(sqlite_engine: sa.Engine):
    assert queue_figures(sqlite_engine) == ({}, 0.0)


def test_the_oldest_age_is_of_the_oldest_job_that_could_be_claimed_now(sqlite_engine):
    _queue(sqlite_engine, "a" * 40, age=30)
    _queue(sqlite_engine, "b" * 40, age=90)
    # Waiting out a retry backoff: queued, but nobody could claim it yet.
    _queue(sqlite_engine, "c" * 40, age=600, delay=60)
    counts, age = queue_figures(sqlite_engine)
    assert counts == {"queued": 3}
    assert 89 <= age < 120

"""Data events in SQL: an object generation builds once however often it is announced, a
storm of generations coalesces into the queued build, and only watched objects build."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest
import sqlalchemy as sa

from trainhook.builds import mark_started
from trainhook.dataevents import BadEvent, ObjectEvent, parse_event, take_event, watched_objects
from trainhook.db import make_engine
from trainhook.models import builds, data_events
from trainhook.repos import RepoConfig
from trainhook.settings import Settings

DATA = 'data = ["data/train.csv", "gs://th-data/models/train.csv"]'


def event(generation: int, name: str = "models/train.csv", kind: str = "OBJECT_FINALIZE"):
    return ObjectEvent(kind, "th-data", name, generation)


def data_builds(engine: sa.Engine) -> list[tuple[str, str, str, str]]:
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(builds.c.ref, builds.c.sha, builds.c.trigger, builds.c.status).order_by(
                builds.c.id
            )
        ).all()
    return [tuple(row) for row in rows]


def test_a_watched_generation_queues_one_build_of_the_branch_head(
    make_settings: Callable[..., Settings], db_url: str
):
    settings = make_settings(db_url, branches=("release", "main"), extra=DATA)
    engine = make_engine(db_url)
    try:
        first = take_event(engine, settings.repos, event(1796204683378792))
        assert [(t.outcome, t.build_id) for t in first] == [("queued", first[0].build_id)]
        # Pub/Sub redelivers; the same generation is announced again: nothing more builds.
        for _ in range(3):
            again = take_event(engine, settings.repos, event(1796204683378792))
            assert [(t.outcome, t.build_id) for t in again] == [("duplicate", first[0].build_id)]
        assert data_builds(engine) == [("refs/heads/release", "", "data", "queued")]
        with engine.connect() as conn:
            rows = conn.execute(sa.select(data_events.c.generation, data_events.c.build_id)).all()
        assert [tuple(r) for r in rows] == [(1796204683378792, first[0].build_id)]
    finally:
        engine.dispose()


def test_new_generations_join_the_queued_build_and_start_another_once_it_runs(
    make_settings: Callable[..., Settings], db_url: str
):
    settings = make_settings(db_url, extra=DATA)
    engine = make_engine(db_url)
    try:
        outcomes = [take_event(engine, settings.repos, event(g))[0] for g in (10, 11, 12)]
        assert [t.outcome for t in outcomes] == ["queued", "joined", "joined"]
        assert len({t.build_id for t in outcomes}) == 1
        with engine.begin() as conn:  # the build started: it has read the object by now
            mark_started(conn, outcomes[0].build_id)
        later = take_event(engine, settings.repos, event(13))[0]
        assert later.outcome == "queued" and later.build_id != outcomes[0].build_id
        assert [b[3] for b in data_builds(engine)] == ["running", "queued"]
    finally:
        engine.dispose()


def test_unwatched_objects_and_other_events_build_nothing(
    make_settings: Callable[..., Settings], db_url: str
):
    settings = make_settings(db_url, extra=DATA)
    engine = make_engine(db_url)
    try:
        assert take_event(engine, settings.repos, event(5, name="models/train.csv.tmp")) == []
        assert take_event(engine, settings.repos, event(5, name="models/other.csv")) == []
        assert take_event(engine, settings.repos, event(5, kind="OBJECT_DELETE")) == []
        assert take_event(engine, settings.repos, event(5, name="data/train.csv")) == []
        assert data_builds(engine) == []
    finally:
        engine.dispose()


def test_two_replicas_taking_the_same_event_build_once(
    make_settings: Callable[..., Settings], db_url: str
):
    settings = make_settings(db_url, extra=DATA)
    engines = [make_engine(db_url) for _ in range(4)]
    start = threading.Barrier(len(engines))
    outcomes: list[str] = []

    def replica(engine: sa.Engine) -> None:
        start.wait()
        outcomes.extend(t.outcome for t in take_event(engine, settings.repos, event(77)))

    try:
        threads = [threading.Thread(target=replica, args=(e,)) for e in engines]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert sorted(outcomes) == ["duplicate"] * 3 + ["queued"]
        assert len(data_builds(engines[0])) == 1
    finally:
        for engine in engines:
            engine.dispose()


def test_every_repository_watching_the_object_is_found(make_settings: Callable[..., Settings]):
    settings = make_settings(extra=DATA)
    other = RepoConfig(
        name="octo-org/other",
        clone_url="https://example.test/o.git",
        secret_env="S",
        data=("gs://th-data/models/train.csv",),
    )
    watched = watched_objects((*settings.repos, other))
    assert {k: [r.name for r in v] for k, v in watched.items()} == {
        ("th-data", "models/train.csv"): ["octo-org/social-score-api", "octo-org/other"]
    }


def test_a_message_that_is_no_object_notification_is_refused_by_name():
    ok = parse_event(
        {
            "eventType": "OBJECT_FINALIZE",
            "bucketId": "th-data",
            "objectId": "models/train.csv",
            "objectGeneration": "1796204683378792",
            "payloadFormat": "JSON_API_V1",
        }
    )
    assert ok == event(1796204683378792)
    with pytest.raises(BadEvent, match="no bucketId, objectId"):
        parse_event({"eventType": "OBJECT_FINALIZE"})
    with pytest.raises(BadEvent, match="objectGeneration 'x' is not a number"):
        parse_event({"eventType": "E", "bucketId": "b", "objectId": "o", "objectGeneration": "x"})


def test_a_repository_whose_first_branch_is_a_glob_builds_nothing_and_says_why(
    make_settings: Callable[..., Settings], sqlite_url: str, caplog: pytest.LogCaptureFixture
):
    settings = make_settings(sqlite_url, branches=("release/*",), extra=DATA)
    engine = make_engine(sqlite_url)
    try:
        assert take_event(engine, settings.repos, event(3)) == []
        assert data_builds(engine) == []
        assert "has no branch to build ('release/*' is a glob): set schedule_branch" in caplog.text
        named = make_settings(
            sqlite_url, branches=("release/*",), extra=DATA + '\nschedule_branch = "release/2"'
        )
        assert [t.outcome for t in take_event(engine, named.repos, event(3))] == ["queued"]
        assert data_builds(engine) == [("refs/heads/release/2", "", "data", "queued")]
    finally:
        engine.dispose()

"""The explanation compares with the newest earlier build of the same branch that recorded
its cache inputs: found with SQL on SQLite and PostgreSQL alike."""

from __future__ import annotations

import json

from trainhook.builds import BuildSpec, append_log, create_build, set_cache_key
from trainhook.db import reading
from trainhook.models import builds
from worker.context import BuildInfo
from worker.hash.explain import previous_inputs
from worker.hash.keys import INPUTS_MARK

REPO = "octo-org/social-score-api"


def build(engine, ref="refs/heads/main", repo=REPO, inputs=None, hashed=True) -> int:
    with engine.begin() as conn:
        build_id = create_build(conn, BuildSpec("github", repo, ref, "a" * 40))
        if hashed:
            set_cache_key(conn, build_id, "ab" * 32)
        if inputs is not None:
            append_log(conn, build_id, "hash", "data data/x.csv\n")
            append_log(conn, build_id, "hash", INPUTS_MARK + json.dumps(inputs) + "\n")
    return build_id


def info(engine, build_id: int) -> BuildInfo:
    with reading(engine) as conn:
        found = BuildInfo.load(conn, build_id)
    assert found is not None
    return found


def test_the_newest_earlier_build_of_the_same_branch_with_a_record_is_used(engine):
    old = build(engine, inputs={"v": 1, "n": "old"})
    newer = build(engine, inputs={"v": 1, "n": "newer"})
    build(engine, ref="refs/heads/dev", inputs={"v": 1, "n": "other branch"})
    build(engine, repo="octo-org/other", inputs={"v": 1, "n": "other repo"})
    build(engine, hashed=False)  # never reached the hash stage
    current = build(engine)
    build(engine, inputs={"v": 1, "n": "later"})  # after this one: not "previous"

    found = previous_inputs(engine, info(engine, current))

    assert found is not None and (found.build_id, found.inputs["n"]) == (newer, "newer")
    assert old < newer


def test_a_build_without_a_readable_record_is_skipped(engine):
    good = build(engine, inputs={"v": 1, "n": "good"})
    torn = build(engine)
    with engine.begin() as conn:
        append_log(conn, torn, "hash", INPUTS_MARK + '{"v": 1, "n": \n')
    current = build(engine)

    found = previous_inputs(engine, info(engine, current))

    assert found is not None and found.build_id == good


def test_the_first_build_of_a_branch_has_nothing_to_compare_with(engine):
    current = build(engine)
    assert previous_inputs(engine, info(engine, current)) is None
    with reading(engine) as conn:
        assert conn.execute(builds.select()).fetchall()

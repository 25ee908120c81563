"""Cloud Build statuses as trainhook statuses; snapshots as stage events that never regress."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from google.cloud.devtools.cloudbuild_v1 import Build

from worker.cloudbuild.track import BUILD_STATUS, Tracker, build_status

T0 = datetime(2030, 1, 1, tzinfo=UTC)
STAGES = ("build", "push", "deploy", "vertex")


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def snapshot(status: str, steps: dict[str, tuple[str, float | None, float | None]]) -> Any:
    """A Build as the client returns it: steps {id: (status, start s, end s)}."""
    out = []
    for step_id, (step_status, start, end) in steps.items():
        timing = {}
        if start is not None:
            timing["start_time"] = at(start)
        if end is not None:
            timing["end_time"] = at(end)
        out.append({"id": step_id, "status": step_status, "timing": timing})
    finished = {"finish_time": at(100)} if status not in ("QUEUED", "WORKING") else {}
    return Build(
        id="b-1",
        status=status,
        log_url="https://console.cloud.google.com/cloud-build/builds/b-1",
        steps=out,
        **finished,
    )


@pytest.mark.parametrize(
    ("cloud", "trainhook"),
    [
        ("QUEUED", "running"),
        ("PENDING", "running"),
        ("WORKING", "running"),
        ("SUCCESS", "succeeded"),
        ("FAILURE", "failed"),
        ("INTERNAL_ERROR", "failed"),
        ("TIMEOUT", "failed"),
        ("EXPIRED", "failed"),
        ("CANCELLED", "cancelled"),
    ],
)
def test_every_cloud_build_status_maps_to_a_build_status(cloud: str, trainhook: str):
    assert build_status(cloud) == trainhook
    assert build_status(Build.Status[cloud]) == trainhook


def test_the_mapping_covers_every_status_the_client_knows():
    assert set(BUILD_STATUS) == {status.name for status in Build.Status}


def test_step_times_become_the_stage_event_times():
    tracker = Tracker(STAGES)
    events = tracker.feed(
        snapshot(
            "SUCCESS",
            {
                "build": ("SUCCESS", 10, 30),
                "push": ("SUCCESS", 30, 40),
                "deploy": ("SUCCESS", 40, 90),
                "vertex": ("SUCCESS", 40, 45),
            },
        )
    )
    times = {(e.stage, e.status): e.at for e in events}
    assert times[("build", "running")] == at(10) and times[("build", "succeeded")] == at(30)
    assert times[("deploy", "succeeded")] == at(90) and times[("vertex", "running")] == at(40)
    assert all(
        "logs https://console.cloud.google.com" in e.detail
        for e in events
        if e.status == "succeeded"
    )


def test_out_of_order_snapshots_never_move_a_stage_back():
    tracker = Tracker(STAGES)
    working = snapshot("WORKING", {"build": ("SUCCESS", 10, 30), "push": ("WORKING", 30, None)})
    older = snapshot("QUEUED", {"build": ("QUEUED", None, None), "push": ("QUEUED", None, None)})
    same_rank_but_stale = snapshot(
        "WORKING", {"build": ("WORKING", 10, None), "push": ("QUEUED", None, None)}
    )
    first = tracker.feed(working)
    assert [(e.stage, e.status) for e in first] == [
        ("build", "running"),
        ("build", "succeeded"),
        ("push", "running"),
    ]
    assert tracker.feed(older) == []
    assert tracker.feed(same_rank_but_stale) == []
    done = snapshot("SUCCESS", {"build": ("SUCCESS", 10, 30), "push": ("SUCCESS", 30, 50)})
    assert [(e.stage, e.status) for e in tracker.feed(done)] == [
        ("push", "succeeded"),
        ("deploy", "skipped"),
        ("vertex", "skipped"),
    ]
    assert tracker.feed(working) == []  # news after the end changes nothing


def test_a_cancelled_build_fails_the_running_stage_and_skips_the_rest():
    tracker = Tracker(STAGES)
    events = tracker.feed(
        snapshot(
            "CANCELLED",
            {
                "build": ("SUCCESS", 10, 30),
                "push": ("CANCELLED", 30, 35),
                "deploy": ("QUEUED", None, None),
            },
        )
    )
    final = {e.stage: (e.status, e.detail) for e in events if e.status != "running"}
    assert final["push"][0] == "failed" and "was cancelled" in final["push"][1]
    assert final["deploy"] == ("skipped", "not run: build cancelled")


def test_an_internal_error_before_any_step_blames_the_first_stage():
    tracker = Tracker(STAGES[:3])
    events = tracker.feed(snapshot("INTERNAL_ERROR", {"build": ("QUEUED", None, None)}))
    assert [(e.stage, e.status) for e in events] == [
        ("build", "failed"),
        ("push", "skipped"),
        ("deploy", "skipped"),
    ]
    assert "hit an internal error" in str(events[0].detail)

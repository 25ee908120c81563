"""Cloud Build statuses as trainhook statuses, and a Build's steps as stage events.

`Tracker.feed` takes successive snapshots of one Cloud Build (from polling, or from the
`cloud-builds` notifications, in any order) and returns only the stage events that move a
stage forward: pending → running → succeeded | failed | skipped. A stale snapshot (an older
build status, or a step behind what was already written) produces nothing, so no status ever
regresses. Step start and end times become the events' times.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

# Cloud Build status -> trainhook build status (contract statuses).
BUILD_STATUS = {
    "STATUS_UNKNOWN": "running",
    "PENDING": "running",
    "QUEUED": "running",
    "WORKING": "running",
    "SUCCESS": "succeeded",
    "FAILURE": "failed",
    "INTERNAL_ERROR": "failed",
    "TIMEOUT": "failed",
    "EXPIRED": "failed",
    "CANCELLED": "cancelled",
}
BUILD_RANK = {"STATUS_UNKNOWN": 0, "PENDING": 1, "QUEUED": 2, "WORKING": 3}  # terminal: 4
STEP_FAILED = frozenset({"FAILURE", "INTERNAL_ERROR", "TIMEOUT", "EXPIRED"})
STAGE_RANK = {"pending": 0, "running": 1, "succeeded": 2, "failed": 2, "skipped": 2}
WHY = {
    "FAILURE": "failed",
    "INTERNAL_ERROR": "hit an internal error",
    "TIMEOUT": "timed out",
    "EXPIRED": "expired in the queue (queueTtl)",
    "CANCELLED": "was cancelled",
}


def status_name(value: Any) -> str:
    """A status as its name, whether the client gave an enum member or a string."""
    return str(getattr(value, "name", value) or "STATUS_UNKNOWN")


def build_status(cloud_status: Any) -> str:
    """The trainhook build status for a Cloud Build status."""
    return BUILD_STATUS[status_name(cloud_status)]


def is_terminal(cloud_status: Any) -> bool:
    return status_name(cloud_status) not in BUILD_RANK


def _time(value: Any) -> datetime | None:
    return value if isinstance(value, datetime) and value.timestamp() > 0 else None


@dataclass(frozen=True)
class StageEvent:
    stage: str
    status: str
    at: datetime | None  # None: now
    detail: str | None = None


class Tracker:
    """Folds snapshots of one Cloud Build into stage events for `stages` (step ids)."""

    def __init__(self, stages: tuple[str, ...], success: Mapping[str, str] | None = None) -> None:
        self.stages = stages
        self.success = dict(success or {})  # stage -> detail when its step succeeds
        self.state: dict[str, str] = {}  # stage -> the last status written in this run
        self.rank = -1
        self.final: Any = None  # the first terminal snapshot fed

    def _move(self, stage: str, status: str, at: datetime | None, detail: str | None) -> list:
        if STAGE_RANK[status] <= STAGE_RANK.get(self.state.get(stage, ""), -1):
            return []
        self.state[stage] = status
        return [StageEvent(stage, status, at, detail)]

    def reason(self, build: Any) -> str:
        """Why a finished build did not succeed, with its log URL."""
        status = status_name(build.status)
        detail = (build.status_detail or "").strip()
        failed = [s.id for s in build.steps if status_name(s.status) in STEP_FAILED]
        where = f"step {failed[0]} " if failed else ""
        text = f"Cloud Build {build.id} {where}{WHY.get(status, status.lower())}"
        return (
            f"{text}: {detail}; logs {build.log_url}" if detail else f"{text}; logs {build.log_url}"
        )

    def feed(self, build: Any) -> list[StageEvent]:
        """The events `build` (one snapshot) adds; [] when it is stale or already seen."""
        status = status_name(build.status)
        rank = BUILD_RANK.get(status, 4)
        if self.final is not None or rank < self.rank:
            return []
        self.rank = rank
        events: list[StageEvent] = []
        end = _time(build.finish_time)
        for step in build.steps:
            if step.id not in self.stages:
                continue
            step_status = status_name(step.status)
            start, stop = _time(step.timing.start_time), _time(step.timing.end_time)
            started = start is not None or step_status not in (
                "QUEUED",
                "PENDING",
                "STATUS_UNKNOWN",
            )
            if started:
                events += self._move(step.id, "running", start, f"Cloud Build step {step.id}")
            if step_status == "SUCCESS":
                detail = self.success.get(step.id, "done") + f"; logs {build.log_url}"
                events += self._move(step.id, "succeeded", stop, detail)
            elif step_status in STEP_FAILED or (step_status == "CANCELLED" and started):
                events += self._move(step.id, "failed", stop or end, self.reason(build))
        if rank == 4:
            self.final = build
            events += self._finish(build, end)
        return events

    def _finish(self, build: Any, end: datetime | None) -> list[StageEvent]:
        """Close the stages a finished build left open: the first one fails with the build's
        reason when nothing failed yet (expired, cancelled, internal error), others skip."""
        events: list[StageEvent] = []
        status = status_name(build.status)
        blamed = status == "SUCCESS" or any(self.state.get(s) == "failed" for s in self.stages)
        for stage in self.stages:
            current = self.state.get(stage)
            if current is not None and STAGE_RANK[current] == 2:
                continue
            if not blamed and (current == "running" or status != "CANCELLED"):
                events += self._move(stage, "failed", end, self.reason(build))
                blamed = True
            else:
                why = "not run: " + (
                    "build cancelled" if status == "CANCELLED" else f"Cloud Build {status}"
                )
                if status == "SUCCESS":
                    why = "not reported by Cloud Build"
                events += self._move(stage, "skipped", end, why)
        return events

"""How a stage ends: an Outcome (succeeded or skipped), or one of the two ways it stops early.

Apart from worker/stage.py so that the recorder, which turns these into stage events, does
not depend on the build context the steps receive."""

from __future__ import annotations

from dataclasses import dataclass

STAGE_STATUSES = ("succeeded", "failed", "skipped")


class StageFailed(Exception):
    """A deterministic failure (tests fail, bad data, health check fails, gate refuses).

    Retrying would fail the same way, so the build fails with `str(exc)` as its reason and
    the job is completed. Anything else raised by a stage is treated as an infrastructure
    fault and retried.
    """


class Interrupted(Exception):
    """Raised at a stage boundary when the worker is stopping, has lost the job's lease, or
    the build was ended meanwhile by someone else (cancelled, superseded)."""

    def __init__(self, reason: str, *, lease_lost: bool = False, ended: bool = False) -> None:
        super().__init__(reason)
        self.lease_lost = lease_lost
        self.ended = ended


@dataclass(frozen=True)
class Outcome:
    """How a stage ended when it did not raise: succeeded (or skipped), with detail and cache."""

    status: str = "succeeded"
    detail: str | None = None
    cache: str | None = None

    def __post_init__(self) -> None:
        if self.status not in ("succeeded", "skipped"):
            raise ValueError(f"an Outcome is succeeded or skipped, not {self.status!r}")
        if self.cache not in (None, "hit", "miss"):
            raise ValueError(f"cache must be 'hit', 'miss' or None, not {self.cache!r}")


def skipped(reason: str) -> Outcome:
    """The outcome of a stage that does not apply to this build."""
    return Outcome(status="skipped", detail=reason)

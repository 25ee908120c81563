"""What a pipeline step is, what it returns and the two ways it can stop early."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from worker.context import BuildContext

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


class Step(Protocol):
    """One unit of the pipeline. It reports every stage named in `stages` through
    `ctx.recorder` (usually one; a builder reports build, push, deploy and vertex itself).

    Raises StageFailed for a deterministic failure, Interrupted at a boundary, anything else
    for an infrastructure fault.
    """

    @property
    def stages(self) -> tuple[str, ...]: ...

    def __call__(self, ctx: BuildContext) -> None: ...


StageFunction = Callable[["BuildContext"], Outcome]


class SingleStage:
    """A step that reports exactly one stage: `fn(ctx)` returns its Outcome.

    `resumable`: when the job is delivered again (a retry, a crashed worker), a stage that
    succeeded in an earlier attempt of the build is not redone. Only for stages that leave
    nothing in the context that later stages read (the pipeline redoes `checkout` always)."""

    def __init__(self, name: str, fn: StageFunction, *, resumable: bool = False) -> None:
        self.name = name
        self.fn = fn
        self.resumable = resumable

    @property
    def stages(self) -> tuple[str, ...]:
        return (self.name,)

    def __call__(self, ctx: BuildContext) -> None:
        ctx.recorder.run_stage(self.name, lambda: self.fn(ctx))

    def __repr__(self) -> str:
        return f"SingleStage({self.name!r}, {getattr(self.fn, '__name__', self.fn)!r})"

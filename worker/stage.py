"""What a pipeline step is, what it returns and the two ways it can stop early."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from worker.context import BuildContext
from worker.outcome import STAGE_STATUSES, Interrupted, Outcome, StageFailed, skipped

# The outcome types are imported from here by most stages: one import for a stage's needs.
__all__ = [
    "STAGE_STATUSES",
    "Interrupted",
    "Outcome",
    "SingleStage",
    "StageFailed",
    "StageFunction",
    "Step",
    "skipped",
]


class Step(Protocol):
    """One unit of the pipeline. It reports every stage named in `stages` through
    `ctx.recorder` (usually one; a builder reports build, push, deploy and vertex itself).

    Raises StageFailed for a deterministic failure, Interrupted at a boundary, anything else
    for an infrastructure fault.
    """

    @property
    def stages(self) -> tuple[str, ...]: ...

    def __call__(self, ctx: BuildContext) -> None: ...


StageFunction = Callable[[BuildContext], Outcome]


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

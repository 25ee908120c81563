"""The builder seam: what turns a trained model into a running release."""

from __future__ import annotations

from typing import Any, Protocol

from worker.context import BuildContext

BUILDER_STAGES = ("build", "push", "deploy", "vertex")


class Builder(Protocol):
    """Builds, pushes and deploys one build's model. A builder reports its own stages
    (`build`, `push`, `deploy`, `vertex`) because a remote builder such as Cloud Build runs
    all four in one remote build; it is a pipeline step like any other."""

    @property
    def stages(self) -> tuple[str, ...]:
        """The stages this builder reports, in order (normally BUILDER_STAGES)."""
        ...

    def __call__(self, ctx: BuildContext) -> None:
        """Package `ctx.source` with the model in `ctx.model_dir`, publish and deploy it.

        Every stage in `stages` is recorded through `ctx.recorder`: started and finished, or
        skipped with a reason. Returns None on success. Raises StageFailed (after recording
        the stage as failed) for a deterministic failure such as a failed health check, in
        which case the release serving traffic is left as it was; Interrupted at a stage
        boundary when the worker stops; any other exception for an infrastructure fault
        (the job is retried).

        Idempotent: running it again for the same build yields the same version and digest
        and leaves the same release deployed.
        """
        ...

    def deployed_metrics(self, ctx: BuildContext) -> dict[str, Any] | None:
        """metrics.json of the model serving `ctx.repo` now, or None when none is deployed.
        Read by the quality gate; never raises for a missing or unreadable release."""
        ...

"""The builder seam: what turns a trained model into a running release."""

from __future__ import annotations

from typing import Any, Protocol

from worker.context import BuildContext
from worker.stage import Outcome, skipped

BUILDER_STAGES = ("build", "push", "deploy", "vertex")
VERTEX_REASON = "Vertex AI pipelines need TRAINHOOK_BUILDER=cloudbuild"


def version_of(ctx: BuildContext) -> str:
    """The release version of a build on this machine: `b<build id>-<12 hex of the sha>`."""
    return f"b{ctx.build.id}-{ctx.build.sha[:12]}"


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


class MachineBuilder:
    """What the builders that deliver on this machine (`bundle`, docker, podman) share: their
    three stages run in order, and `vertex` skipped (only Cloud Build submits pipelines)."""

    stages: tuple[str, ...] = BUILDER_STAGES

    def __call__(self, ctx: BuildContext) -> None:
        ctx.recorder.run_stage("build", lambda: self.build(ctx))
        ctx.recorder.run_stage("push", lambda: self.push(ctx))
        ctx.recorder.run_stage("deploy", lambda: self.deploy(ctx))
        ctx.recorder.run_stage("vertex", lambda: skipped(VERTEX_REASON))

    def build(self, ctx: BuildContext) -> Outcome:
        raise NotImplementedError

    def push(self, ctx: BuildContext) -> Outcome:
        raise NotImplementedError

    def deploy(self, ctx: BuildContext) -> Outcome:
        raise NotImplementedError

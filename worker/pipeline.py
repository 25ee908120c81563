"""The stage pipeline: steps run in order, a failure skips the rest."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from trainhook.builds import STAGES
from trainhook.pullrequests import STOP_REASON, is_pull_ref
from trainhook.settings import Settings
from worker.builder import BUILDER_STAGES, Builder
from worker.context import BuildContext
from worker.stage import SingleStage, StageFailed, Step

if TYPE_CHECKING:
    from trainhook.artifacts import ArtifactStore

NOT_REPORTED = "not reported by its step"


class Pipeline:
    """An ordered list of steps (replaceable in tests; later issues add a cache or a remote
    builder as steps). Together the steps report each stage once, in contract order."""

    def __init__(self, steps: Sequence[Step]) -> None:
        self.steps = tuple(steps)
        stages = tuple(stage for step in self.steps for stage in step.stages)
        unknown = [s for s in stages if s not in STAGES]
        if unknown:
            raise ValueError(f"unknown stage(s) {unknown}; stages are {STAGES}")
        if len(set(stages)) != len(stages) or list(stages) != sorted(stages, key=STAGES.index):
            raise ValueError(f"stages {stages} must be unique and in the order of {STAGES}")
        self.stages = stages

    def run(self, ctx: BuildContext) -> str | None:
        """Run every step. Returns None when the build succeeded, or the reason it failed
        (a stage raised StageFailed; the stages after it are then marked skipped).
        Interrupted and infrastructure exceptions propagate to the caller (the worker)."""
        recorder = ctx.recorder
        for step in self.steps:
            if stops_before(step, ctx):
                for stage in step.stages:
                    recorder.skip(stage, STOP_REASON)
                continue
            if kept_from_earlier(step, ctx):
                for stage in step.stages:
                    recorder.keep(stage)
                continue
            try:
                step(ctx)
            except StageFailed as exc:
                reason = str(exc) or type(exc).__name__
                failed = [s for s in step.stages if recorder.done.get(s) == "failed"]
                if not failed:
                    # The step raised before recording its stage: record it as failed.
                    pending = [s for s in step.stages if s not in recorder.done]
                    stage = pending[0] if pending else step.stages[-1]
                    recorder.finish(stage, "failed", reason)
                    failed = [stage]
                recorder.skip_rest()
                return f"{failed[0]} failed: {reason}"
            for stage in step.stages:
                if stage not in recorder.done:
                    recorder.skip(stage, NOT_REPORTED)
        return None


def stops_before(step: Step, ctx: BuildContext) -> bool:
    """A pull request head (its build, a replay or a rebuild of it) is tested and trained,
    never packaged, pushed or deployed: the builder's stages are skipped with the reason."""
    return is_pull_ref(ctx.build.ref) and all(s in BUILDER_STAGES for s in step.stages)


def kept_from_earlier(step: Step, ctx: BuildContext) -> bool:
    """Resume from the first unfinished stage: a resumable step whose stages all succeeded
    in an earlier attempt is not run again. `checkout` always is (the files are needed)."""
    return (
        bool(ctx.earlier)
        and getattr(step, "resumable", False)
        and "checkout" not in step.stages
        and all(stage in ctx.earlier for stage in step.stages)
    )


def default_pipeline(
    settings: Settings, builder: Builder | None = None, store: ArtifactStore | None = None
) -> Pipeline:
    """checkout → test → hash → train → the configured builder (build, push, deploy, vertex).
    The cache levels live in `store` (default: the one TRAINHOOK_ARTIFACTS names)."""
    # Imported here: these stages load the trainer library, which toy pipelines never need.
    from trainhook.artifacts import open_store
    from worker.checkout import checkout_stage
    from worker.hash.keys import make_hash_stage
    from worker.testcommand import repo_tests_stage
    from worker.training import make_train_stage

    builder = builder or builder_for(settings)
    return Pipeline(
        [
            SingleStage("checkout", checkout_stage),
            # Tests leave nothing behind for later stages: their success holds for the commit.
            SingleStage("test", repo_tests_stage, resumable=True),
            SingleStage("hash", make_hash_stage(store or open_store(settings.artifacts))),
            SingleStage("train", make_train_stage(builder.deployed_metrics)),
            builder,
        ]
    )


def builder_for(settings: Settings) -> Builder:
    """The builder selected by TRAINHOOK_BUILDER: `local` (docker, else podman, else
    `bundle`, see worker/container/engine.py), `docker`, `podman`, `bundle`, or `cloudbuild`
    with its Google clients made from the settings. Raises NotImplementedError for an
    unknown builder."""
    from worker.container.engine import resolve

    chosen, note = resolve(settings.builder)
    if chosen == "bundle":
        from worker.local.builder import LocalBuilder

        return LocalBuilder(note=note)
    if chosen in ("docker", "podman"):
        from worker.container.builder import ContainerBuilder
        from worker.container.engine import engine_named

        return ContainerBuilder(engine_named(chosen))
    if chosen == "cloudbuild":
        from worker.cloudbuild.builder import make_cloud_builder

        return make_cloud_builder(settings)
    raise NotImplementedError(f"TRAINHOOK_BUILDER={settings.builder} is not available yet")

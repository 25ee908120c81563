"""How a stage runs repository code: in the sandbox (worker/sandbox.py) made from the
operator's settings and the repository's keys, or refused when the sandbox does not work
here, or (the repository said `sandbox = false`) unsandboxed, which stages then say."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from trainhook.sandboxsettings import effective_limits
from worker.commands import child_env
from worker.context import BuildContext
from worker.sandbox import (
    INSTALL_HINT,
    Runner,
    Sandbox,
    SandboxSpec,
    Unsandboxed,
    own_code_paths,
    sandbox_problem,
)
from worker.stage import StageFailed

UNSANDBOXED = "UNSANDBOXED (sandbox = false)"


def secret_names(ctx: BuildContext) -> set[str]:
    """Every variable holding a secret of any configured repository: its webhook secret and
    its forge API token, whatever the variables are called (child_env drops them)."""
    repos = ctx.settings.repos
    tokens = {repo.forge_token_env for repo in repos if repo.forge_token_env}
    return {repo.secret_env for repo in repos} | tokens


def sandbox_spec(
    ctx: BuildContext,
    *,
    readonly: tuple[Path, ...] = (),
    env: dict[str, str] | None = None,
    **fields: Any,
) -> SandboxSpec:
    """A SandboxSpec for this build's repository: the operator's limits with the
    repository's overrides, the interpreter and trainhook's own code plus
    TRAINHOOK_SANDBOX_PATHS read-only, $TRAINHOOK_HOME and the artifacts hidden, the
    repository's `sandbox_env`; `fields` are the other SandboxSpec fields."""
    settings, repo = ctx.settings, ctx.repo
    return SandboxSpec(
        limits=effective_limits(settings.sandbox_limits, repo.sandbox_limits),
        readonly=(*own_code_paths(), *settings.sandbox_paths, *readonly),
        hide=(settings.home, settings.artifacts_path),
        env={**dict(repo.sandbox_env), **(env or {})},
        **fields,
    )


def runner_for(ctx: BuildContext, spec: SandboxSpec) -> Runner:
    """The sandbox for `spec`; `Unsandboxed` when the repository says `sandbox = false`.
    Raises StageFailed, saying how to fix it, when the sandbox does not work here: trainhook
    never runs repository code unsandboxed unless the repository opted out."""
    if not ctx.repo.sandbox:
        return Unsandboxed(spec, child_env(secret_names(ctx), dict(ctx.repo.sandbox_env)))
    problem = sandbox_problem()
    if problem is not None:
        hint = "" if INSTALL_HINT in problem else f" ({INSTALL_HINT})"
        raise StageFailed(
            f"repository code runs only in a sandbox, and the sandbox does not work here: "
            f"{problem}{hint}. Or set `sandbox = false` for {ctx.repo.name} in "
            f"{ctx.settings.config_path} to run its code as the worker's own user."
        )
    return Sandbox(spec)


def isolation_note(ctx: BuildContext) -> str | None:
    """What a stage's detail says about how repository code ran, when it is not the norm."""
    if not ctx.repo.sandbox:
        return UNSANDBOXED
    if ctx.repo.sandbox_network:
        return "network on (sandbox_network = true)"
    return None

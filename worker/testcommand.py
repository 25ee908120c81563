"""The test stage: the repository's own `test_command`, run on the exported commit."""

from __future__ import annotations

import shlex

from worker.commands import child_env, run_command
from worker.context import BuildContext
from worker.stage import Outcome, StageFailed, skipped


def secret_names(ctx: BuildContext) -> set[str]:
    """Every variable holding a webhook secret of any configured repository."""
    return {repo.secret_env for repo in ctx.settings.repos}


def repo_tests_stage(ctx: BuildContext) -> Outcome:
    """Run `test_command` (shell-split, no shell) in the checkout under `test_timeout`.
    A non-zero exit or a timeout fails the build with the end of the output in detail."""
    command = ctx.repo.test_command
    if not command or not command.strip():
        return skipped("no test_command configured")
    try:
        argv = shlex.split(command)
    except ValueError as exc:
        raise StageFailed(f"test_command {command!r} cannot be split: {exc}") from None
    timeout = ctx.settings.test_timeout
    ctx.log("test", f"$ {shlex.join(argv)}\n")
    try:
        result = run_command(
            argv,
            cwd=ctx.need_source(),
            env=child_env(secret_names(ctx)),
            timeout=timeout,
            on_output=lambda text: ctx.log("test", text),
        )
    except OSError as exc:
        raise StageFailed(f"test_command {argv[0]!r} could not be started: {exc}") from None
    if result.timed_out:
        raise StageFailed(
            f"{shlex.join(argv)} timed out after {timeout:g}s\n{result.last_lines(10)}"
        )
    if result.returncode != 0:
        raise StageFailed(
            f"{shlex.join(argv)} exited with {result.returncode}\n{result.last_lines(20)}"
        )
    summary = result.last_lines(1) or "no output"
    return Outcome(detail=f"{shlex.join(argv)} passed in {result.seconds:.1f}s: {summary}")

"""The test stage: the repository's own `test_command`, run on the exported commit, in the
worker's Python (`test_env = "worker"`, the default) or in a venv made from the commit's deps
files and reused while they do not change (`test_env = "venv"`, see worker/testenv.py)."""

from __future__ import annotations

import shlex

from worker.commands import child_env, run_command
from worker.context import BuildContext
from worker.stage import Outcome, StageFailed, skipped


def secret_names(ctx: BuildContext) -> set[str]:
    """Every variable holding a secret of any configured repository: its webhook secret and
    its forge API token, whatever the variables are called (child_env drops them)."""
    repos = ctx.settings.repos
    tokens = {repo.forge_token_env for repo in repos if repo.forge_token_env}
    return {repo.secret_env for repo in repos} | tokens


def repo_tests_stage(ctx: BuildContext) -> Outcome:
    """Run `test_command` (shell-split, no shell) in the checkout under `test_timeout`.
    A non-zero exit or a timeout fails the build with the end of the output in detail; so
    does a failed venv install (`test_env = "venv"`). With a venv, the detail says whether
    it was created (and in how long) or reused."""
    command = ctx.repo.test_command
    if not command or not command.strip():
        return skipped("no test_command configured")
    try:
        argv = shlex.split(command)
    except ValueError as exc:
        raise StageFailed(f"test_command {command!r} cannot be split: {exc}") from None
    secrets = secret_names(ctx)
    if ctx.repo.test_env != "venv":
        return run_tests(ctx, argv, child_env(secrets))
    # Imported here: the default setting never needs git trees or the venv directory.
    from worker.testenv import prepared_venv

    with prepared_venv(ctx, secrets) as venv:  # held in use (never pruned) while tests run
        return run_tests(ctx, argv, venv.env(child_env(secrets)), note=venv.note())


def run_tests(
    ctx: BuildContext, argv: list[str], env: dict[str, str], note: str | None = None
) -> Outcome:
    """Run the test command with `env`; `note` (how the venv was had) goes into the detail.
    Raises StageFailed when it cannot start, fails or times out."""
    suffix = f" · {note}" if note else ""
    timeout = ctx.settings.test_timeout
    ctx.log("test", f"$ {shlex.join(argv)}\n")
    try:
        result = run_command(
            argv,
            cwd=ctx.need_source(),
            env=env,
            timeout=timeout,
            on_output=lambda text: ctx.log("test", text),
        )
    except OSError as exc:
        raise StageFailed(f"test_command {argv[0]!r} could not be started: {exc}{suffix}") from None
    if result.timed_out:
        raise StageFailed(
            f"{shlex.join(argv)} timed out after {timeout:g}s{suffix}\n{result.last_lines(10)}"
        )
    if result.returncode != 0:
        raise StageFailed(
            f"{shlex.join(argv)} exited with {result.returncode}{suffix}\n{result.last_lines(20)}"
        )
    summary = result.last_lines(1) or "no output"
    return Outcome(detail=f"{shlex.join(argv)} passed in {result.seconds:.1f}s: {summary}{suffix}")

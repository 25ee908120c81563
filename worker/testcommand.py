"""The test stage: the repository's own `test_command`, run on the exported commit, in the
worker's Python (`test_env = "worker"`, the default) or in a venv made from the commit's deps
files and reused while they do not change (`test_env = "venv"`, see worker/testenv.py)."""

from __future__ import annotations

import shlex

from worker.context import BuildContext
from worker.repocode import isolation_note, runner_for, sandbox_spec, secret_names
from worker.sandbox import Runner
from worker.stage import Outcome, StageFailed, skipped

__all__ = ["repo_tests_stage", "run_tests", "secret_names"]


def repo_tests_stage(ctx: BuildContext) -> Outcome:
    """Run `test_command` (shell-split, no shell) in a private copy of the checkout, in the
    sandbox (see worker/repocode.py), under `test_timeout`. A non-zero exit or a timeout
    fails the build with the end of the output in detail; so does a failed venv install
    (`test_env = "venv"`) and a sandbox that does not work here. With a venv, the detail
    says whether it was created (and in how long) or reused; unsandboxed, it says so."""
    command = ctx.repo.test_command
    if not command or not command.strip():
        return skipped("no test_command configured")
    try:
        argv = shlex.split(command)
    except ValueError as exc:
        raise StageFailed(f"test_command {command!r} cannot be split: {exc}") from None
    network = ctx.repo.sandbox_network
    notes = [note] if (note := isolation_note(ctx)) else []
    if ctx.repo.test_env != "venv":
        spec = sandbox_spec(ctx, checkout=ctx.need_source(), network=network)
        return run_tests(ctx, argv, runner_for(ctx, spec), note=" · ".join(notes) or None)
    # Imported here: the default setting never needs git trees or the venv directory.
    from worker.testenv import prepared_venv

    runner_for(ctx, sandbox_spec(ctx))  # refuse before building a venv nothing may use
    with prepared_venv(ctx, secret_names(ctx)) as venv:  # held in use while tests run
        path = venv.lease.path
        spec = sandbox_spec(
            ctx,
            checkout=ctx.need_source(),
            network=network,
            readonly=(path,),  # the tests may not change the venv later builds reuse
            path=(str(venv.lease.bin_dir), "/usr/local/bin", "/usr/bin", "/bin"),
            env={"VIRTUAL_ENV": str(path)},
        )
        note = " · ".join([venv.note(), *notes])
        return run_tests(ctx, argv, runner_for(ctx, spec), note=note)


def run_tests(
    ctx: BuildContext, argv: list[str], runner: Runner, note: str | None = None
) -> Outcome:
    """Run the test command with `runner`; `note` (how the venv was had, whether it was
    sandboxed) goes into the detail. Raises StageFailed when it cannot start, fails or
    times out."""
    suffix = f" · {note}" if note else ""
    timeout = ctx.settings.test_timeout
    ctx.log("test", f"$ {shlex.join(argv)}\n")
    try:
        result = runner.run(
            argv,
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

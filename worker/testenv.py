"""The test stage's own virtual environment (`test_env = "venv"` in the repositories file).

The venv is keyed by the commit's deps key, computed exactly as the hash stage does (same
function, same inputs: the (name, blob id) of uv.lock, pyproject.toml and requirements*.txt
at the root of the commit, read from the mirror), and lives at
`$TRAINHOOK_HOME/venvs/<deps key>`. It is created once per key and reused by every later
build with the same files; `force` recreates it. What is installed:

- uv.lock at the root: `uv sync --frozen --no-install-workspace` (the locked dependencies,
  default groups included; not the project itself, which is the code under test);
- else requirements*.txt at the root: all of them;
- else pyproject.toml: its `[project] dependencies` (and its `dev` dependency group).

uv is used when the worker has it (beside its Python, else on PATH); without it the venv is
made by `python -m venv` and filled by pip (a uv.lock is then not honoured: the requirements
files, else pyproject.toml, are installed instead, and the log says so). Unless UV_CACHE_DIR /
PIP_CACHE_DIR are set, the installers' caches are `$TRAINHOOK_HOME/cache/uv/<repository>` and
`.../pip/<repository>`: one per repository, because an install may run the repository's build
backend, which can write the cache, and another repository must not install what it left.

Installing runs repository code (build backends, uv's and pip's reading of its files), so it
runs in the sandbox too (worker/repocode.py), with the network on (it must reach the
package index), the venv and the caches writable, the operator's UV_*/PIP_* and proxy
variables passed; the tests then get the venv read-only. uv installs with
`--compile-bytecode` (pip compiles by default) for that reason: a read-only venv's bytecode
is written at install or never, and importing scikit-learn from source costs the test stage
seconds on every build.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import sys
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from worker.commands import SECRET_MARKERS, child_env
from worker.context import BuildContext
from worker.hash.decision import Scope
from worker.hash.gittree import tree_facts
from worker.hash.keys import cache_scope, deps_files, deps_key
from worker.repocode import runner_for, sandbox_spec
from worker.stage import StageFailed
from worker.venvcache import Lease, VenvCache


def commit_deps(mirror: Path, sha: str, scope: Scope) -> tuple[str, list[tuple[str, str]]]:
    """The deps key of commit `sha` in cache `scope` (the repository's) and the (name, blob
    id) it is made of: the same value the hash stage records. Reads trees only, in one git
    process."""
    files = deps_files(tree_facts(mirror, sha, []))
    return deps_key(files, scope), files


def find_uv() -> str | None:
    """The uv binary beside the worker's Python (a venv with uv installed), else beside the
    interpreter it was made from (installed with that Python: a version manager's shim on
    PATH would not run in the sandbox), else on PATH."""
    for folder in (Path(sys.executable).parent, Path(sys.base_prefix) / "bin"):
        beside = folder / "uv"
        if beside.is_file() and os.access(beside, os.X_OK):
            return str(beside)
    return shutil.which("uv")


# The operator's installer configuration (index, find-links, offline, proxies,
# certificates) reaches the sandboxed install; names that look like credentials do not.
INSTALLER_ENV = re.compile(
    r"^(UV_|PIP_|HTTPS?_PROXY$|NO_PROXY$|ALL_PROXY$|SSL_CERT_|REQUESTS_CA_BUNDLE$)",
    re.IGNORECASE,
)


def installer_env(source: dict[str, str]) -> dict[str, str]:
    """The variables of `source` an install is given in the sandbox."""
    return {
        key: value
        for key, value in source.items()
        if INSTALLER_ENV.match(key) and not any(m in key.upper() for m in SECRET_MARKERS)
    }


@dataclass(frozen=True)
class Plan:
    """How to fill a venv: `kind` is uv.lock, requirements, pyproject or none; `files` the
    root files read; `uv` the uv binary or None for venv + pip."""

    kind: str
    files: tuple[str, ...]
    uv: str | None

    def describe(self) -> str:
        tool = "uv" if self.uv else "pip"
        return f"{', '.join(self.files) or 'no deps files'} with {tool}"

    def commands(self, venv: Path, source: Path) -> list[list[str]]:
        """The commands that create `venv` and install into it, run in `source`."""
        python = str(venv / "bin" / "python")
        if self.uv:
            uv = self.uv
            steps = [[uv, "venv", "--no-project", "--python", sys.executable, str(venv)]]
            if self.kind == "uv.lock":
                steps.append(
                    [uv, "sync", "--frozen", "--no-install-workspace", "--compile-bytecode"]
                )
            elif self.kind == "requirements":
                steps.append(
                    [uv, "pip", "install", "--compile-bytecode", "--python", python,
                     *_each_r(self.files)]
                )  # fmt: skip
            elif self.kind == "pyproject":
                groups = ["--group", "dev"] if "dev" in _groups(source) else []
                steps.append(
                    [uv, "pip", "install", "--compile-bytecode", "--python", python, "-r",
                     "pyproject.toml", *groups]
                )  # fmt: skip
            return steps
        steps = [[sys.executable, "-m", "venv", str(venv)]]
        pip = [python, "-m", "pip", "install", "--disable-pip-version-check", "--no-input"]
        if self.kind == "requirements":
            steps.append([*pip, *_each_r(self.files)])
        elif self.kind == "pyproject":
            wanted = _pyproject_requirements(source)
            if wanted:
                steps.append([*pip, *wanted])
        return steps


def plan_for(files: list[tuple[str, str]], uv: str | None) -> Plan:
    """What to install for the commit's deps files (names at the root, as in the key)."""
    names = [name for name, _ in files]
    requirements = tuple(n for n in names if n.startswith("requirements"))
    if "uv.lock" in names and uv:
        return Plan("uv.lock", ("uv.lock", "pyproject.toml"), uv)
    if requirements:
        return Plan("requirements", requirements, uv)
    if "pyproject.toml" in names:
        return Plan("pyproject", ("pyproject.toml",), uv)
    return Plan("none", (), uv)


def _short(argv: list[str]) -> str:
    """The step's program by name and its subcommand (`uv pip install`, `python -m venv`)."""
    return shlex.join([Path(argv[0]).name, *argv[1:3]])


def _each_r(files: tuple[str, ...]) -> list[str]:
    return [arg for name in files for arg in ("-r", name)]


def _pyproject(source: Path) -> dict[str, object]:
    try:
        return tomllib.loads((source / "pyproject.toml").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise StageFailed(f"pyproject.toml cannot be read for the test venv: {exc}") from None


def _groups(source: Path) -> dict[str, object]:
    groups = _pyproject(source).get("dependency-groups")
    return groups if isinstance(groups, dict) else {}


def _pyproject_requirements(source: Path) -> list[str]:
    """[project] dependencies and the plain strings of the `dev` group (pip has no groups)."""
    project = _pyproject(source).get("project")
    deps = project.get("dependencies", []) if isinstance(project, dict) else []
    dev = _groups(source).get("dev", [])
    items = [*(deps if isinstance(deps, list) else []), *(dev if isinstance(dev, list) else [])]
    return [item for item in items if isinstance(item, str)]


def installer(
    ctx: BuildContext, plan: Plan, secrets: set[str], *, lock_ignored: bool = False
) -> Callable[[Path], None]:
    """A function creating a venv by `plan` (for VenvCache.use), logging to the test stage.
    It raises StageFailed with the installer's last lines when a step fails."""
    source = ctx.need_source()

    def create(venv: Path) -> None:
        # The installer sees what test code would: no trainhook setting, no secret.
        base = child_env(secrets)
        extra = {"VIRTUAL_ENV": str(venv), "UV_PROJECT_ENVIRONMENT": str(venv)}
        extra.update(installer_env(base))
        extra.setdefault("PIP_DISABLE_PIP_VERSION_CHECK", "1")
        # Caches on the state volume unless the operator chose: the worker's user may have no
        # writable home, and uv hard-links from a cache on the venvs' own file system.
        caches = ctx.settings.home / "cache"
        extra.setdefault("UV_CACHE_DIR", str(caches / "uv" / ctx.repo.slug))
        extra.setdefault("PIP_CACHE_DIR", str(caches / "pip" / ctx.repo.slug))
        writable = [venv]
        for name in ("UV_CACHE_DIR", "PIP_CACHE_DIR"):
            cache = Path(extra[name])
            cache.mkdir(parents=True, exist_ok=True)
            writable.append(cache)
        # The mount point of the venv in the sandbox: uv and venv fill it in place.
        venv.mkdir(parents=True, exist_ok=True)
        readonly = tuple(Path(a) for a in (plan.uv,) if a)
        spec = sandbox_spec(
            ctx,
            checkout=source,
            network=True,
            readonly=readonly,
            writable=tuple(writable),
            env=extra,
        )
        runner = runner_for(ctx, spec)
        if lock_ignored:
            ctx.log("test", "uv not found: uv.lock is not honoured, installing with pip\n")
        for argv in plan.commands(venv, source):
            ctx.log("test", f"$ {shlex.join(argv)}\n")
            try:
                result = runner.run(
                    argv,
                    timeout=ctx.settings.test_timeout,
                    on_output=lambda text: ctx.log("test", text),
                )
            except OSError as exc:
                raise StageFailed(f"test venv: {argv[0]!r} could not be started: {exc}") from None
            if not result.ok:
                how = "timed out" if result.timed_out else f"exited with {result.returncode}"
                raise StageFailed(
                    f"installing {plan.describe()} into the test venv failed: "
                    f"{_short(argv)} {how}\n{result.last_lines(15)}"
                )

    return create


@dataclass(frozen=True)
class PreparedVenv:
    """The venv a test command runs in, and how this build got it."""

    lease: Lease
    plan: Plan

    def note(self) -> str:
        key = self.lease.key[:12]
        if self.lease.created:
            return (
                f"venv created for deps {key} in {self.lease.seconds:.1f}s ({self.plan.describe()})"
            )
        return f"venv reused (deps {key})"


@contextlib.contextmanager
def prepared_venv(ctx: BuildContext, secrets: set[str]) -> Iterator[PreparedVenv]:
    """The venv for this build's commit, created when missing (or when the build is forced),
    held in use until the block ends. Raises StageFailed when the install fails (no venv is
    left behind; the next build tries again)."""
    if ctx.mirror is None:
        raise RuntimeError("no mirror: the checkout stage has not run")
    key, files = commit_deps(ctx.mirror, ctx.build.sha, cache_scope(ctx.repo))
    plan = plan_for(files, find_uv())
    cache = VenvCache(ctx.settings.venvs_dir, ctx.settings.venv_keep)
    lock_ignored = plan.kind != "uv.lock" and any(name == "uv.lock" for name, _ in files)
    create = installer(ctx, plan, secrets, lock_ignored=lock_ignored)
    ctx.log("test", f"test venv {cache.path(key)} (deps key {key})\n")
    with cache.use(key, create, force=ctx.build.force) as lease:
        venv = PreparedVenv(lease, plan)
        ctx.log("test", venv.note() + "\n")
        yield venv

"""The sandbox's limits (TRAINHOOK_SANDBOX_*) and the repositories' `sandbox_*` keys, parsed
and validated in one place so that a bad value is an error at start-up, naming the variable
or key, never a surprise inside a build."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from trainhook.configcheck import (
    Invalid,
    Number,
    Problems,
    env_number,
    human_size,
    shown,
)
from trainhook.errors import ConfigError

ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Set by the sandbox itself (or would undo it): a repository may not declare them.
RESERVED_ENV = frozenset({"PATH", "HOME", "TMPDIR", "VIRTUAL_ENV", "PYTHONHOME", "PWD"})
# Names that look like credentials: the repositories file is configuration, not a secret store.
SECRET_MARKERS = ("SECRET", "TOKEN", "PASSWORD", "PASSWD", "CREDENTIAL", "API_KEY")
# Each limit's range. The floor: below it not even the sandbox's own start (a shell, cp, a
# Python interpreter) fits, and every build would fail with a confusing message.
LIMITS = {
    "memory": Number("size", 64 * 1024**2, 1024**4),
    "cpu_seconds": Number("int", 1, 7 * 86400, "CPU seconds"),
    "processes": Number("int", 8, 1_000_000, "processes"),
    "disk": Number("size", 1024**2, 1024**4),
}
MINIMUM = {name: int(spec.low) for name, spec in LIMITS.items()}


@dataclass(frozen=True)
class SandboxLimits:
    """What one sandboxed command may use. `memory` is the address space of each process
    (RLIMIT_AS), `cpu_seconds` the CPU time of each process (RLIMIT_CPU), `processes` the
    processes and threads of the sandbox's user (RLIMIT_NPROC), `disk` the size of the
    private file system holding the copy of the checkout, /tmp and $HOME (and the largest
    file any process may write, RLIMIT_FSIZE). Wall time is the stage's own timeout."""

    memory: int = 4 * 1024**3
    cpu_seconds: int = 900
    processes: int = 256
    disk: int = 2 * 1024**3

    def describe(self) -> str:
        return (
            f"memory {human(self.memory)}/process, cpu {self.cpu_seconds}s/process, "
            f"{self.processes} processes, disk {human(self.disk)}"
        )


human = human_size


def limits_from_env(env: Mapping[str, str]) -> SandboxLimits:
    """TRAINHOOK_SANDBOX_MEMORY, _CPU_SECONDS, _PROCESSES and _DISK over the defaults.
    Raises ConfigError naming every bad variable, its value and the range expected."""
    problems = Problems()
    defaults = SandboxLimits()
    values = {
        field: int(
            env_number(
                problems, env, f"TRAINHOOK_SANDBOX_{field.upper()}", spec, getattr(defaults, field)
            )
        )
        for field, spec in LIMITS.items()
    }
    problems.raise_if_any()
    return SandboxLimits(**values)


def sandbox_paths_from_env(env: Mapping[str, str]) -> tuple[Path, ...]:
    """TRAINHOOK_SANDBOX_PATHS: host paths (':'-separated, absolute) every sandbox sees
    read-only at the same place, e.g. a local wheelhouse the test venvs install from."""
    raw = env.get("TRAINHOOK_SANDBOX_PATHS") or ""
    paths = []
    for item in raw.split(":"):
        if not item.strip():
            continue
        path = Path(item.strip())
        if not path.is_absolute():
            raise ConfigError(f"TRAINHOOK_SANDBOX_PATHS: {item!r} is not an absolute path")
        paths.append(path)
    return tuple(paths)


def sandbox_env(env: Mapping[str, str]) -> dict[str, Any]:
    """The Settings fields read from the environment."""
    return {
        "sandbox_limits": limits_from_env(env),
        "sandbox_paths": sandbox_paths_from_env(env),
    }


def parse_repo_env(table: object) -> tuple[tuple[str, str], ...]:
    """A repository's `sandbox_env = { NAME = "value" }`: plain values its tests see.
    Raises Invalid naming every variable at fault."""
    if not isinstance(table, dict):
        raise ValueError(f'got {shown(table)}, expected a table of NAME = "value"')
    items = []
    problems = []
    for name, value in table.items():
        if not ENV_NAME.match(name):
            problems.append(f"{name!r} is not an environment variable name")
        elif name in RESERVED_ENV or name.startswith("TRAINHOOK_"):
            problems.append(f"{name!r} is set by the sandbox itself")
        elif any(marker in name.upper() for marker in SECRET_MARKERS):
            problems.append(
                f"{name!r} looks like a secret; the repositories file holds plain values only"
            )
        elif not isinstance(value, str):
            problems.append(f"{name!r} = {shown(value)}: expected a string")
        elif "\0" in value:
            problems.append(f"{name!r} contains a NUL character")
        else:
            items.append((name, value))
    if problems:
        raise Invalid(problems)
    return tuple(sorted(items))


def parse_repo_limits(table: object) -> dict[str, int]:
    """A repository's `sandbox_limits = { memory = "8G", processes = 512 }`: overrides of
    TRAINHOOK_SANDBOX_* for its own builds. Raises Invalid naming every limit at fault."""
    if not isinstance(table, dict):
        raise ValueError(f"got {shown(table)}, expected a table of limit = value")
    out: dict[str, int] = {}
    problems = []
    for field, value in table.items():
        spec = LIMITS.get(field)
        if spec is None:
            problems.append(f"unknown limit {field!r} (expected one of {sorted(LIMITS)})")
            continue
        try:
            out[field] = int(spec.parse(value))
        except ValueError as exc:
            problems.append(f"{field} = {shown(value)} {exc}; expected {spec.describe()}")
    if problems:
        raise Invalid(problems)
    return out


def effective_limits(base: SandboxLimits, overrides: tuple[tuple[str, int], ...]) -> SandboxLimits:
    """`base` (the operator's) with a repository's overrides applied."""
    return replace(base, **dict(overrides)) if overrides else base

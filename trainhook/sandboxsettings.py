"""The sandbox's limits (TRAINHOOK_SANDBOX_*) and the repositories' `sandbox_*` keys, parsed
and validated in one place so that a bad value is an error at start-up, naming the variable
or key, never a surprise inside a build."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from trainhook.errors import ConfigError

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B?|B)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Set by the sandbox itself (or would undo it): a repository may not declare them.
RESERVED_ENV = frozenset({"PATH", "HOME", "TMPDIR", "VIRTUAL_ENV", "PYTHONHOME", "PWD"})
# Names that look like credentials: the repositories file is configuration, not a secret store.
SECRET_MARKERS = ("SECRET", "TOKEN", "PASSWORD", "PASSWD", "CREDENTIAL", "API_KEY")
# The floor under each limit: below it not even the sandbox's own start (a shell, cp, a
# Python interpreter) fits, and every build would fail with a confusing message.
MINIMUM = {
    "memory": 64 * 1024**2,
    "cpu_seconds": 1,
    "processes": 8,
    "disk": 1024**2,
}


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


def human(size: int) -> str:
    for unit in ("T", "G", "M", "K"):
        if size >= _UNITS[unit] and size % _UNITS[unit] == 0:
            return f"{size // _UNITS[unit]}{unit}"
    return f"{size}B"


def parse_size(raw: str | int) -> int:
    """`"512M"`, `"2G"`, `"1.5GiB"`, `"1048576"` or an int -> bytes (binary units).
    Raises ValueError on anything else."""
    if isinstance(raw, bool):
        raise ValueError(f"{raw!r} is not a size")
    if isinstance(raw, int):
        return raw
    match = _SIZE.match(raw)
    if not match:
        raise ValueError(f"{raw!r} is not a size (a number of bytes, or with K, M, G or T)")
    unit = (match.group(2) or "").upper().rstrip("B").rstrip("I")
    return int(float(match.group(1)) * _UNITS[unit])


def _check(field: str, value: int, label: str) -> int:
    if value < MINIMUM[field]:
        floor = human(MINIMUM[field]) if field in ("memory", "disk") else MINIMUM[field]
        raise ValueError(f"{label}={value!r} is below the minimum of {floor}")
    return value


def limits_from_env(env: Mapping[str, str]) -> SandboxLimits:
    """TRAINHOOK_SANDBOX_MEMORY, _CPU_SECONDS, _PROCESSES and _DISK over the defaults.
    Raises ConfigError naming the variable."""
    values: dict[str, int] = {}
    for field in ("memory", "cpu_seconds", "processes", "disk"):
        name = f"TRAINHOOK_SANDBOX_{field.upper()}"
        raw = (env.get(name) or "").strip()
        if not raw:
            continue
        try:
            value = parse_size(raw) if field in ("memory", "disk") else int(raw)
            values[field] = _check(field, value, name)
        except ValueError as exc:
            message = str(exc) if name in str(exc) else f"{name}: {exc}"
            if "invalid literal" in message:
                message = f"{name}={raw!r} is not a whole number"
            raise ConfigError(message) from None
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
    Raises ValueError naming the variable at fault."""
    if not isinstance(table, dict):
        raise ValueError('must be a table of NAME = "value"')
    items = []
    for name, value in table.items():
        if not ENV_NAME.match(name):
            raise ValueError(f"{name!r} is not an environment variable name")
        if name in RESERVED_ENV or name.startswith("TRAINHOOK_"):
            raise ValueError(f"{name!r} is set by the sandbox itself")
        if any(marker in name.upper() for marker in SECRET_MARKERS):
            raise ValueError(
                f"{name!r} looks like a secret; the repositories file holds plain values only"
            )
        if not isinstance(value, str):
            raise ValueError(f"{name!r} must be a string (got {type(value).__name__})")
        if "\0" in value:
            raise ValueError(f"{name!r} contains a NUL character")
        items.append((name, value))
    return tuple(sorted(items))


def parse_repo_limits(table: object) -> dict[str, int]:
    """A repository's `sandbox_limits = { memory = "8G", processes = 512 }`: overrides of
    TRAINHOOK_SANDBOX_* for its own builds. Raises ValueError naming the limit at fault."""
    if not isinstance(table, dict):
        raise ValueError("must be a table of limit = value")
    out: dict[str, int] = {}
    for field, value in table.items():
        if field not in MINIMUM:
            raise ValueError(f"unknown limit {field!r} (expected one of {sorted(MINIMUM)})")
        if field in ("memory", "disk"):
            number = parse_size(value)
        elif isinstance(value, int) and not isinstance(value, bool):
            number = value
        else:
            raise ValueError(f"{field!r} must be a whole number")
        out[field] = _check(field, number, field)
    return out


def effective_limits(base: SandboxLimits, overrides: tuple[tuple[str, int], ...]) -> SandboxLimits:
    """`base` (the operator's) with a repository's overrides applied."""
    return replace(base, **dict(overrides)) if overrides else base

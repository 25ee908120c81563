"""Parsing and range-checking configuration values, collecting every problem.

Settings and the repositories file are checked in full before anything starts, and every
problem found is reported in one error: an operator fixing a deployment should not have to
restart it once per mistake. Each problem names where it is (a variable, or a file, a
repository and a key), the value seen and what is expected.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

from trainhook.errors import ConfigError

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B?|B)?\s*$", re.IGNORECASE)
SIZE_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
DURATION_FORMS = '300, "300s", "5m", "1h30m"'


def shown(value: object, limit: int = 60) -> str:
    """A value as the operator wrote it, cut short: messages quote it, never dump it."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def parse_size(raw: str | int) -> int:
    """`"512M"`, `"2G"`, `"1.5GiB"`, `"1048576"` or an int -> bytes (binary units).
    Raises ValueError on anything else."""
    if isinstance(raw, bool):
        raise ValueError(f"{raw!r} is not a size")
    if isinstance(raw, int):
        return raw
    if not isinstance(raw, str):
        raise ValueError(f"{shown(raw)} is not a size (a number of bytes, or with K, M, G or T)")
    match = _SIZE.match(raw)
    if not match:
        raise ValueError(f"{raw!r} is not a size (a number of bytes, or with K, M, G or T)")
    unit = (match.group(2) or "").upper().rstrip("B").rstrip("I")
    return int(float(match.group(1)) * SIZE_UNITS[unit])


def human_size(size: int) -> str:
    for unit in ("T", "G", "M", "K"):
        if size >= SIZE_UNITS[unit] and size % SIZE_UNITS[unit] == 0:
            return f"{size // SIZE_UNITS[unit]}{unit}"
    return f"{size}B"


def parse_duration(raw: str | int | float) -> float:
    """Seconds from `300`, `2.5`, `"300"`, `"300s"`, `"5m"`, `"1h30m"` or `"250ms"`.
    Raises ValueError on anything else (negative, NaN and infinite values included)."""
    if isinstance(raw, bool):
        raise ValueError(f"{raw!r} is not a duration")
    if isinstance(raw, int | float):
        seconds = float(raw)
    elif isinstance(raw, str):
        text = raw.strip().lower()
        try:
            seconds = float(text)
        except ValueError:
            parts = _DURATION_PART.findall(text)
            if not parts or "".join(n + u for n, u in parts) != text:
                raise ValueError(f"{raw!r} is not a duration") from None
            seconds = sum(float(n) * DURATION_UNITS[u] for n, u in parts)
    else:
        raise ValueError(f"{shown(raw)} is not a duration")
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"{raw!r} is not a duration")
    return seconds


def human_duration(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


@dataclass(frozen=True)
class Number:
    """One numeric setting: its kind, unit and range. `low_open` excludes `low` itself
    (a timeout of 0 is no timeout at all, not an instant one)."""

    kind: str  # "int" | "float" | "duration" | "size"
    low: float
    high: float
    unit: str = ""
    low_open: bool = False

    def describe(self) -> str:
        """What is expected, in words: "a duration (300, "5m") from 1s to 1d"."""
        show = {
            "duration": human_duration,
            "size": lambda v: human_size(int(v)),
        }.get(self.kind, lambda v: f"{v:g}")
        what = {
            "int": "a whole number" + (f" of {self.unit}" if self.unit else ""),
            "float": "a number" + (f" of {self.unit}" if self.unit else ""),
            "duration": f"a duration ({DURATION_FORMS})",
            "size": "a size (bytes, or with K, M, G, T: 25M)",
        }[self.kind]
        low = f"more than {show(self.low)}" if self.low_open else f"from {show(self.low)}"
        return f"{what}, {low} to {show(self.high)}"

    def parse(self, raw: object) -> float:
        """The value in its unit (seconds, bytes, a count). Raises ValueError saying "is not
        a duration" (size, whole number, number) or "is out of range"."""
        noun = {"int": "a whole number", "float": "a finite number"}.get(
            self.kind, "a " + self.kind
        )
        value: float
        try:
            if self.kind == "duration":
                value = parse_duration(raw)  # type: ignore[arg-type]
            elif self.kind == "size":
                value = parse_size(raw)  # type: ignore[arg-type]
            elif isinstance(raw, bool) or not isinstance(raw, int | float | str):
                raise ValueError(noun)
            elif self.kind == "int":
                if isinstance(raw, float):
                    raise ValueError(noun)
                value = int(raw.strip()) if isinstance(raw, str) else raw
            else:
                value = float(raw)
                if not math.isfinite(value):
                    raise ValueError(noun)
        except ValueError:
            raise ValueError(f"is not {noun}") from None
        too_low = value <= self.low if self.low_open else value < self.low
        if too_low or value > self.high:
            raise ValueError("is out of range")
        return value


class Invalid(ValueError):
    """One or more bad values in one table; each line names its key."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


class Problems:
    """Every problem found while checking a configuration, one line each."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def add(self, line: str) -> None:
        if line not in self.lines:
            self.lines.append(line)

    def extend(self, lines: list[str]) -> None:
        for line in lines:
            self.add(line)

    @contextmanager
    def check(self, prefix: str = "") -> Iterator[None]:
        """Run one independent check: its error becomes a problem and checking goes on."""
        try:
            yield
        except ConfigError as exc:
            self.extend([prefix + line for line in exc.problems])
        except ValueError as exc:
            self.extend([prefix + line for line in getattr(exc, "problems", None) or [str(exc)]])

    def __bool__(self) -> bool:
        return bool(self.lines)

    def raise_if_any(self, headline: str = "the configuration is not valid") -> None:
        if len(self.lines) == 1:
            raise ConfigError(self.lines[0])
        if self.lines:
            count = f"{headline} ({len(self.lines)} problems):"
            raise ConfigError(count + "\n  - " + "\n  - ".join(self.lines), problems=self.lines)


def env_number(
    problems: Problems, env: Mapping[str, str], name: str, spec: Number, default: float
) -> float:
    """The variable `name` parsed by `spec`; unset or empty: `default`. A bad value is a
    problem naming the variable, the value seen and what is expected, and `default` is used
    so that checking can go on."""
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        return spec.parse(raw)
    except ValueError:
        problems.add(f"{name}={raw!r}: expected {spec.describe()}")
        return default

"""Small text helpers the templates and charts share: branch names, durations, timestamps."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from trainhook.builds import TERMINAL_BUILD


def branch(ref: str) -> str:
    """`refs/heads/main` -> `main`, `refs/tags/v1` -> `v1`; anything else unchanged."""
    for prefix in ("refs/heads/", "refs/tags/"):
        if ref.startswith(prefix):
            return ref[len(prefix) :]
    return ref


def first_line(text: str | None) -> str:
    return (text or "").strip().split("\n", 1)[0].strip()


def duration(seconds: float | None) -> str:
    """Human-sized duration: `0.42s`, `12s`, `3m 04s`, `1h 02m`; `—` when unknown."""
    if seconds is None:
        return "—"
    if seconds < 10:
        return f"{seconds:.2f}s" if seconds < 1 else f"{seconds:.1f}s"
    whole = round(seconds)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m {whole % 60:02d}s"
    return f"{whole // 3600}h {whole % 3600 // 60:02d}m"


def parse(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


def when(value: str | None) -> str:
    """An ISO timestamp as `YYYY-MM-DD HH:MM:SS UTC`."""
    parsed = parse(value)
    return "—" if parsed is None else parsed.strftime("%Y-%m-%d %H:%M:%S UTC")


def elapsed(build: dict[str, Any], now: datetime) -> float | None:
    """Total duration of a finished build; time since creation for one still in flight."""
    if build["duration_s"] is not None or build["status"] in TERMINAL_BUILD:
        return build["duration_s"]
    created = parse(build["created_at"])
    return None if created is None else max(0.0, (now - created).total_seconds())


def stage_title(stage: dict[str, Any]) -> str:
    """The tooltip of a stage cell: name, status, duration and cache result."""
    parts = [f"{stage['name']}: {stage['status']}"]
    if stage["duration_s"] is not None and stage["status"] != "skipped":
        parts.append(duration(stage["duration_s"]))
    if stage["cache"]:
        parts.append(f"cache {stage['cache']}")
    return ", ".join(parts)

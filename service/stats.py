"""Build history arithmetic: per-stage median and p90, ETA of a running build, the time cache
hits saved, and builds grouped as first build, cache hit, code-only change or data change.
Pure functions over the contract's build dicts (newest first, as the database returns them)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from trainhook.builds import STAGES

KINDS = ("first build", "cache hit", "code-only change", "data change")


def percentile(values: Iterable[float], q: float) -> float | None:
    """The q-quantile (0..1) with linear interpolation between closest ranks; None if empty."""
    data = sorted(values)
    if not data:
        return None
    pos = (len(data) - 1) * q
    low, high = math.floor(pos), math.ceil(pos)
    return data[low] + (data[high] - data[low]) * (pos - low)


@dataclass(frozen=True)
class StageStat:
    name: str
    median: float | None
    p90: float | None
    count: int


def _stage(build: dict[str, Any], name: str) -> dict[str, Any] | None:
    return next((s for s in build["stages"] if s["name"] == name), None)


def stage_seconds(builds: Sequence[dict[str, Any]], name: str) -> list[float]:
    """Durations of a stage where it succeeded (a failed or skipped stage says little)."""
    out = []
    for build in builds:
        stage = _stage(build, name)
        if stage and stage["status"] == "succeeded" and stage["duration_s"] is not None:
            out.append(float(stage["duration_s"]))
    return out


def stage_stats(builds: Sequence[dict[str, Any]]) -> list[StageStat]:
    """Median and p90 per stage, in contract order."""
    stats = []
    for name in STAGES:
        values = stage_seconds(builds, name)
        stats.append(StageStat(name, percentile(values, 0.5), percentile(values, 0.9), len(values)))
    return stats


def totals(builds: Sequence[dict[str, Any]]) -> list[float]:
    return [
        float(b["duration_s"]) for b in builds if b["status"] == "succeeded" and b["duration_s"]
    ]


def _parse(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


def eta_seconds(
    build: dict[str, Any], medians: dict[str, float | None], now: datetime
) -> float | None:
    """Seconds until a running or queued build should end: what is left of the running stage
    plus the median of every stage still pending. None when finished or without history."""
    if build["finished_at"] is not None or not any(v is not None for v in medians.values()):
        return None
    left = 0.0
    for stage in build["stages"]:
        median = medians.get(stage["name"]) or 0.0
        if stage["status"] == "pending":
            left += median
        elif stage["status"] == "running":
            started = _parse(stage["started_at"])
            spent = 0.0 if started is None else (now - started).total_seconds()
            left += max(median - spent, 0.0)
    return left


def train_cache(build: dict[str, Any]) -> str | None:
    stage = _stage(build, "train")
    if stage is None or stage["status"] != "succeeded":
        return None
    return stage["cache"] if stage["cache"] in ("hit", "miss") else None


def train_time(build: dict[str, Any]) -> float | None:
    stage = _stage(build, "train")
    return None if stage is None else stage["duration_s"]


def miss_train_median(builds: Sequence[dict[str, Any]]) -> float | None:
    """The median train time of builds that trained (cache misses): what a hit avoids."""
    return percentile(
        (t for b in builds if train_cache(b) == "miss" and (t := train_time(b)) is not None), 0.5
    )


def saved_seconds(build: dict[str, Any], miss_median: float | None) -> float | None:
    """Train time a cache-hit build saved against the median miss; None unless a hit."""
    spent = train_time(build)
    if train_cache(build) != "hit" or miss_median is None or spent is None:
        return None
    return max(miss_median - spent, 0.0)


def classify(builds: Sequence[dict[str, Any]]) -> dict[int, str]:
    """Each succeeded build's kind, judged oldest first: the first that trained is the
    `first build`; a hit on a commit built before is a `cache hit`; a hit on a new commit a
    `code-only change`; a later miss a `data change` (data, trainer or forced)."""
    kinds: dict[int, str] = {}
    seen_shas: set[str] = set()
    trained = False
    for build in sorted(builds, key=lambda b: b["id"]):
        cache = train_cache(build)
        if build["status"] != "succeeded" or cache is None:
            continue
        if cache == "miss":
            kinds[build["id"]] = "data change" if trained else "first build"
            trained = True
        else:
            kinds[build["id"]] = "cache hit" if build["sha"] in seen_shas else "code-only change"
        seen_shas.add(build["sha"])
    return kinds


@dataclass(frozen=True)
class KindRow:
    kind: str
    count: int
    total_median: float | None
    train_median: float | None


def compare_kinds(builds: Sequence[dict[str, Any]]) -> list[KindRow]:
    """Median total and train time per kind of build (see `classify`)."""
    kinds = classify(builds)
    rows = []
    for kind in KINDS:
        group = [b for b in builds if kinds.get(b["id"]) == kind]
        rows.append(
            KindRow(
                kind,
                len(group),
                percentile(totals(group), 0.5),
                percentile((t for b in group if (t := train_time(b)) is not None), 0.5),
            )
        )
    return rows

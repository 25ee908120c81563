"""Chart geometry for inline SVG drawn on the server: the build waterfall and the history chart.
Numbers only; the templates draw them (and escape every label). While a build runs, the page
script redraws the waterfall from the same data-* attributes (`layoutWaterfall` in
static/common.js)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from service.formatting import duration, parse

# Waterfall: stage names left of LEFT, bars from LEFT to RIGHT, duration labels after the bar.
WIDTH, LEFT, RIGHT, ROW, TOP = 960, 92, 860, 24, 26
MIN_BAR = 2.0
STEPS = (
    0.01,
    0.02,
    0.05,
    0.1,
    0.2,
    0.5,
    1,
    2,
    5,
    10,
    15,
    30,
    60,
    120,
    300,
    600,
    900,
    1800,
    3600,
    7200,
    14400,
)


@dataclass
class Bar:
    name: str
    status: str
    y: float
    x: float | None = None  # None: nothing to draw (pending without history)
    width: float = 0.0
    label: str = ""
    forecast: bool = False
    start: str | None = None
    end: str | None = None
    median: float | None = None


@dataclass
class Waterfall:
    height: float
    created: str
    end: str
    running: bool
    bars: list[Bar]
    ticks: list[tuple[float, str]] = field(default_factory=list)
    width: int = WIDTH
    left: int = LEFT
    right: int = RIGHT
    row: int = ROW
    top: int = TOP


def tick_step(span: float, most: int = 6) -> float:
    """The smallest round step that puts at most `most` ticks on a span of seconds."""
    return next((s for s in STEPS if span / s <= most), math.ceil(span / most / 3600) * 3600.0)


def _ticks(span: float) -> list[tuple[float, str]]:
    step = tick_step(span)
    ticks, t = [], 0.0
    while t <= span + 1e-9:
        ticks.append((round(LEFT + t / span * (RIGHT - LEFT), 1), "0" if t == 0 else duration(t)))
        t += step
    return ticks


def waterfall(
    build: dict[str, Any], now: datetime, medians: dict[str, float | None] | None = None
) -> Waterfall:
    """Bars per stage on a time axis from webhook receipt to the build's end (or its forecast
    end while it runs: pending stages are drawn as outlines at their median durations)."""
    medians = medians or {}
    created = parse(build["created_at"]) or now
    running = build["finished_at"] is None
    end = parse(build["finished_at"]) or now
    times: dict[str, tuple[datetime, datetime]] = {}
    cursor = now
    for stage in build["stages"]:
        start, finish = parse(stage["started_at"]), parse(stage["finished_at"])
        if start is not None:
            finish = finish or (now if stage["status"] == "running" else start)
            times[stage["name"]] = (start, finish)
            end = max(end, finish)
            if stage["status"] == "running":
                expected = start + timedelta(seconds=medians.get(stage["name"]) or 0.0)
                cursor = max(cursor, expected)
    forecast: dict[str, tuple[datetime, datetime]] = {}
    if running:
        for stage in build["stages"]:
            median = medians.get(stage["name"])
            if stage["status"] == "pending" and median is not None:
                forecast[stage["name"]] = (cursor, cursor + timedelta(seconds=median))
                cursor += timedelta(seconds=median)
        end = max([end, *(f for _, f in forecast.values())])
    span = max((end - created).total_seconds(), 1e-3)

    def x_of(t: datetime) -> float:
        return LEFT + min(max((t - created).total_seconds() / span, 0.0), 1.0) * (RIGHT - LEFT)

    bars = []
    for i, stage in enumerate(build["stages"]):
        name, status = stage["name"], stage["status"]
        bar = Bar(name, status, TOP + i * ROW, median=medians.get(name))
        bar.start, bar.end = stage["started_at"], stage["finished_at"]
        if name in times:
            start, finish = times[name]
            bar.x = round(x_of(start), 1)
            bar.width = round(max(x_of(finish) - bar.x, MIN_BAR), 1)
            seconds = (finish - start).total_seconds()
            bar.label = "skipped" if status == "skipped" else duration(seconds)
            if status == "running":
                bar.label += " so far"
        elif name in forecast:
            start, finish = forecast[name]
            bar.x, bar.forecast = round(x_of(start), 1), True
            bar.width = round(max(x_of(finish) - bar.x, MIN_BAR), 1)
            bar.label = "~" + duration((finish - start).total_seconds())
        bars.append(bar)
    return Waterfall(
        height=TOP + len(bars) * ROW + 4,
        created=build["created_at"],
        end=end.isoformat(),
        running=running,
        bars=bars,
        ticks=_ticks(span),
    )


@dataclass
class Column:
    id: int
    x: float
    y: float
    height: float
    status: str
    cache: str | None
    title: str


@dataclass
class History:
    width: int
    height: int
    columns: list[Column]
    y_ticks: list[tuple[float, str]]
    median_y: float | None
    base: float
    bar: float


def history_chart(
    builds: list[dict[str, Any]], caches: dict[int, str | None], median: float | None
) -> History:
    """Total duration per build over time (oldest left), one column each."""
    width, height, left, top, base = 960, 200, 56, 10, 180
    done = [b for b in sorted(builds, key=lambda b: b["id"]) if b["duration_s"] is not None]
    peak = max((b["duration_s"] for b in done), default=1.0) or 1.0
    step = tick_step(peak, 4)
    ceiling = step * max(1, -(-peak // step))
    slot = (width - left - 8) / max(len(done), 1)
    bar = max(min(slot - 2, 24.0), 1.0)

    def y_of(seconds: float) -> float:
        return round(base - seconds / ceiling * (base - top), 1)

    columns = []
    for i, b in enumerate(done):
        y = y_of(b["duration_s"])
        cache = caches.get(b["id"])
        title = f"#{b['id']} {b['status']} in {duration(b['duration_s'])}"
        if cache:
            title += f", model cache {cache}"
        x = round(left + i * slot, 1)
        columns.append(Column(b["id"], x, y, round(base - y, 1), b["status"], cache, title))
    ticks, t = [], 0.0
    while t <= ceiling + 1e-9:
        ticks.append((y_of(t), duration(t) if t else "0"))
        t += step
    return History(
        width, height, columns, ticks, None if median is None else y_of(median), base, bar
    )

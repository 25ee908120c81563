"""Stage start/finish events, stage logs and stage metrics of one build run."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from trainhook.builds import add_event, append_log
from trainhook.logs import set_log_field
from trainhook.metrics import Metrics
from trainhook.models import stage_events
from worker.outcome import Interrupted, Outcome, StageFailed

log = logging.getLogger(__name__)

MAX_DETAIL = 2000  # a detail is a summary for the status page; the full text goes to the log
MAX_LOG_PER_STAGE = 4 * 1024 * 1024
EARLIER_FAILED = "earlier stage failed"


def clip(text: str, limit: int = MAX_DETAIL) -> str:
    """`text` cut to `limit` characters, keeping the end (where errors usually are)."""
    return text if len(text) <= limit else "…" + text[-(limit - 1) :]


class Recorder:
    """Writes one build's stage events and logs, each in its own short transaction (so no
    write transaction is ever held across a stage), and times stages into `stage_seconds`.

    `guard` is called before a stage starts and raises Interrupted when the worker must stop.
    `muted` returns True once the lease is lost: another worker may own the build by then,
    so nothing more is written.
    """

    def __init__(
        self,
        engine: Engine,
        metrics: Metrics,
        build_id: int,
        stages: tuple[str, ...],
        *,
        guard: Callable[[], None] = lambda: None,
        muted: Callable[[], bool] = lambda: False,
    ) -> None:
        self.engine = engine
        self.metrics = metrics
        self.build_id = build_id
        self.stages = stages
        self.guard = guard
        self.muted = muted
        self.done: dict[str, str] = {}  # stage -> final status, for this run only
        self._started: dict[str, float] = {}
        self._log_sizes: dict[str, int] = {}

    def _event(
        self, stage: str, status: str, detail: str | None = None, cache: str | None = None
    ) -> None:
        if self.muted():
            return
        with self.engine.begin() as conn:
            add_event(
                conn,
                self.build_id,
                stage,
                status,
                detail=None if detail is None else clip(detail),
                cache=cache,
            )

    def start(self, stage: str) -> None:
        """Record `stage` as running; raises Interrupted instead when the worker must stop."""
        self.guard()
        set_log_field("stage", stage)
        self._started[stage] = time.monotonic()
        self._event(stage, "running")

    def finish(
        self, stage: str, status: str, detail: str | None = None, cache: str | None = None
    ) -> None:
        """Record the final status of a started (or, for `skipped`, never started) stage."""
        seconds = time.monotonic() - self._started.pop(stage, time.monotonic())
        set_log_field("stage", stage)
        self._event(stage, status, detail, cache)
        self.done[stage] = status
        self.metrics.stage_seconds.labels(stage=stage, status=status).observe(seconds)
        note = f" [cache {cache}]" if cache else ""
        log.info(
            "build %d %s %s in %.2fs%s: %s",
            self.build_id,
            stage,
            status,
            seconds,
            note,
            clip(detail or "-", 300),
        )
        set_log_field("stage", None)

    def skip(self, stage: str, reason: str) -> None:
        self.finish(stage, "skipped", reason)

    def run_stage(self, stage: str, fn: Callable[[], Outcome]) -> Outcome:
        """Start `stage`, run `fn` and record how it ended. StageFailed and unexpected errors
        are recorded as `failed` and re-raised; the caller decides what the build does."""
        self.start(stage)
        try:
            outcome = fn()
        except StageFailed as exc:
            self.finish(stage, "failed", str(exc) or type(exc).__name__)
            raise
        except Interrupted:
            # Only raised by a nested guard: the stage did not complete, say so and stop.
            self.finish(stage, "failed", "interrupted: worker stopping")
            raise
        except Exception as exc:
            self.finish(stage, "failed", f"internal error: {type(exc).__name__}: {exc}")
            raise
        self.finish(stage, outcome.status, outcome.detail, outcome.cache)
        return outcome

    def keep(self, stage: str) -> None:
        """`stage` succeeded in an earlier attempt and is not redone: no new event (the
        page keeps showing that run), but it counts as done for this run."""
        self.done[stage] = "succeeded"
        log.info("build %d %s: succeeded in an earlier attempt, not redone", self.build_id, stage)

    def skip_rest(self, reason: str = EARLIER_FAILED) -> None:
        """Mark every stage of the pipeline that has not ended in this run as skipped."""
        for stage in self.stages:
            if stage not in self.done:
                self.skip(stage, reason)

    def log(self, stage: str, text: str) -> None:
        """Append to a stage's log (capped per stage so a chatty command cannot fill the DB)."""
        if not text or self.muted():
            return
        size = self._log_sizes.get(stage, 0)
        if size >= MAX_LOG_PER_STAGE:
            return
        if size + len(text) > MAX_LOG_PER_STAGE:
            text = text[: MAX_LOG_PER_STAGE - size] + "\n[log truncated]\n"
        self._log_sizes[stage] = size + len(text)
        with self.engine.begin() as conn:
            append_log(conn, self.build_id, stage, text)


def latest_statuses(
    conn: sa.Connection, build_id: int, stages: Sequence[str] | None = None
) -> dict[str, str]:
    """The latest recorded status of each stage of `build_id` (of `stages` only, if given)."""
    query = sa.select(stage_events.c.stage, stage_events.c.status).where(
        stage_events.c.build_id == build_id
    )
    if stages is not None:
        query = query.where(stage_events.c.stage.in_(stages))
    return {stage: status for stage, status in conn.execute(query.order_by(stage_events.c.id))}


def succeeded_before(conn: sa.Connection, build_id: int) -> frozenset[str]:
    """The stages of `build_id` whose latest event says succeeded (from earlier attempts)."""
    latest = latest_statuses(conn, build_id)
    return frozenset(stage for stage, status in latest.items() if status == "succeeded")

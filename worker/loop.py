"""The worker loop: claim a job under a lease, run the pipeline, settle the job."""

from __future__ import annotations

import logging
import os
import secrets
import signal
import socket
import threading
from collections.abc import Callable
from types import FrameType

import sqlalchemy as sa

from trainhook.builds import TERMINAL_BUILD, add_event, mark_finished, mark_started
from trainhook.db import reading
from trainhook.logs import configure_logging, log_context, set_log_field
from trainhook.models import builds
from trainhook.queue import Job
from trainhook.runtime import Runtime, build_runtime
from trainhook.settings import Settings
from worker.context import BuildContext, BuildInfo
from worker.heartbeat import Heartbeat
from worker.http import LoopPulse, WorkerHttp
from worker.pipeline import Pipeline
from worker.recorder import Recorder, succeeded_before
from worker.stage import Interrupted

log = logging.getLogger(__name__)


def default_backoff(attempt: int) -> float:
    """Seconds before retry number `attempt` of an infrastructure failure: 10, 20, 40… ≤ 300."""
    return float(min(300, 10 * 2 ** max(0, attempt - 1)))


def default_owner() -> str:
    return f"{socket.gethostname()[:40]}-{os.getpid()}-{secrets.token_hex(3)}"


class Worker:
    """Runs queued builds. Safe to run many at once, in threads or processes, on one
    database: the queue's lease makes sure one worker at a time runs a job."""

    def __init__(
        self,
        runtime: Runtime,
        owner: str | None = None,
        *,
        pipeline: Pipeline | None = None,
        backoff: Callable[[int], float] = default_backoff,
    ) -> None:
        self.runtime = runtime
        self.settings = runtime.settings
        self.owner = (owner or default_owner())[:64]
        self._pipeline = pipeline
        self.backoff = backoff
        # How long an idle loop may go without turning before /healthz says it is stuck:
        # an idle turn waits at most the poll interval (or a Pub/Sub pull).
        wait = self.settings.poll_interval + self.settings.pubsub_pull_seconds
        self.pulse = LoopPulse(stale_after=max(60.0, 4 * wait))

    @property
    def pipeline(self) -> Pipeline:
        if self._pipeline is None:
            from worker.pipeline import default_pipeline  # imports the trainer: only if used

            self._pipeline = default_pipeline(self.settings)
        return self._pipeline

    def run(self, stop: threading.Event, burst: bool = False) -> int:
        """Process jobs until `stop` is set (a running job is released at its next stage
        boundary) or, with `burst`, until no job is runnable. Returns the jobs processed."""
        self.pipeline  # noqa: B018 -- fail at start, not on the first job, if misconfigured
        queue = self.runtime.queue
        processed = 0
        log.info("worker %s started%s", self.owner, " (burst)" if burst else "")
        while not stop.is_set():
            self.pulse.turn()
            try:
                job = queue.claim(self.owner)
            except Exception as exc:
                log.warning("worker %s: claim failed, retrying: %s", self.owner, exc)
                stop.wait(self.settings.poll_interval)
                continue
            if job is None:
                if burst:
                    break
                queue.wait(self.settings.poll_interval)
                continue
            self.pulse.turn(busy=True)
            try:
                self.process(job, stop)
            except Exception:
                # Settling failed (database gone?): the lease expires and the job is retried.
                log.exception("job %d: could not be settled; its lease will expire", job.id)
            processed += 1
        self.pulse.stopped = True
        log.info("worker %s stopped after %d job(s)", self.owner, processed)
        return processed

    def process(self, job: Job, stop: threading.Event) -> str:
        """Run one claimed job; returns how it ended (succeeded, failed, retrying, dead,
        released, lease lost, ended (cancelled meanwhile), already finished, missing)."""
        heartbeat = Heartbeat(self.runtime.queue, job, self.settings.lease_seconds).start()
        try:
            # Every line logged while this job runs names it (trainhook.logs).
            with log_context(build_id=job.build_id, job=job.id, attempt=job.attempts):
                return self._process(job, stop, heartbeat)
        finally:
            heartbeat.stop()

    def _process(self, job: Job, stop: threading.Event, heartbeat: Heartbeat) -> str:
        runtime, queue = self.runtime, self.runtime.queue
        with reading(runtime.engine) as conn:
            build = BuildInfo.load(conn, job.build_id)
            # A build already running was started by an earlier attempt (which a graceful stop
            # does not count), so what that attempt finished is kept.
            started = build is not None and build.status == "running"
            earlier = succeeded_before(conn, job.build_id) if started else frozenset()
        if build is not None:
            set_log_field("repo", build.repo)
        if build is None or build.status in TERMINAL_BUILD:
            # Delivered twice, or cancelled meanwhile: nothing to do, and nothing to redo.
            queue.complete(job)
            return "missing" if build is None else "already finished"

        def guard() -> None:
            if heartbeat.expired():
                raise Interrupted("lease lost", lease_lost=True)
            status = self._status(build.id)
            if status in TERMINAL_BUILD:
                raise Interrupted(f"build {status} while it ran", ended=True)
            if stop.is_set():
                raise Interrupted("worker stopping")

        pipeline = self.pipeline
        recorder = Recorder(
            runtime.engine,
            runtime.metrics,
            build.id,
            pipeline.stages,
            guard=guard,
            muted=heartbeat.expired,
        )
        if job.attempts > self.settings.max_attempts:
            # The last allowed attempt ended without settling the job: its worker died (OOM
            # killer, SIGKILL, a lost node) or was stopped mid-build; earlier ones did too or
            # failed. Without this, a job that kills every worker running it would be taken
            # up again after each lease, forever.
            reason = "the last attempt ended without a result (its worker died or was stopped)"
            return self._give_up(job, heartbeat, recorder, job.attempts - 1, reason)
        with runtime.engine.begin() as conn:
            detail = f"picked up by {self.owner} (attempt {job.attempts})"
            add_event(conn, build.id, "queued", "succeeded", detail=detail)
            mark_started(conn, build.id)
        repo = self.settings.repo(build.repo, build.provider)
        if repo is None:
            reason = f"repository {build.repo!r} ({build.provider}) is not configured"
            recorder.skip_rest(reason)
            return self._settle(job, heartbeat, build.id, "failed", reason)
        ctx = BuildContext(
            settings=self.settings,
            repo=repo,
            build=build,
            recorder=recorder,
            engine=runtime.engine,
            attempt=job.attempts,
            earlier=earlier,
        )
        try:
            with ctx.cleanup:
                error = pipeline.run(ctx)
        except Interrupted as exc:
            if exc.lease_lost or heartbeat.lost.is_set():
                log.warning("build %d: lease lost, stopped without a final status", build.id)
                return "lease lost"
            if exc.ended:
                # Its final status was set by whoever ended it: keep it, skip what is left.
                recorder.skip_rest(str(exc))
                queue.complete(job)
                log.info("build %d: %s; stopped", build.id, exc)
                return "ended"
            queue.release(job, error="worker stopped; released for another worker", counted=False)
            log.info("build %d: released for another worker (%s)", build.id, exc)
            return "released"
        except Exception as exc:
            if heartbeat.lost.is_set():
                return "lease lost"
            return self._infra_failure(job, heartbeat, recorder, exc)
        return self._settle(job, heartbeat, build.id, "failed" if error else "succeeded", error)

    def _status(self, build_id: int) -> str | None:
        with reading(self.runtime.engine) as conn:
            status = conn.execute(
                sa.select(builds.c.status).where(builds.c.id == build_id)
            ).scalar()
        return None if status is None else str(status)

    def _infra_failure(
        self, job: Job, heartbeat: Heartbeat, recorder: Recorder, exc: Exception
    ) -> str:
        reason = f"{type(exc).__name__}: {exc}"
        attempts = self.settings.max_attempts
        if job.attempts < attempts:
            delay = self.backoff(job.attempts)
            log.warning(
                "build %d: attempt %d/%d failed, retry in %.0fs: %s",
                job.build_id,
                job.attempts,
                attempts,
                delay,
                reason,
                exc_info=exc,
            )
            self.runtime.queue.release(job, delay=delay, error=reason)
            return "retrying"
        return self._give_up(job, heartbeat, recorder, job.attempts, reason)

    def _give_up(
        self, job: Job, heartbeat: Heartbeat, recorder: Recorder, attempts: int, reason: str
    ) -> str:
        """Fail the build after `attempts` attempts and move its job to the dead letters."""
        log.error("build %d: gave up after %d attempts: %s", job.build_id, attempts, reason)
        recorder.skip_rest(f"gave up after {attempts} attempts")
        # Fail the build before burying: if we die in between, the job is reclaimed, finds
        # the build terminal and completes; nothing is left running forever.
        outcome = self._settle(
            job, heartbeat, job.build_id, "failed", f"gave up after {attempts} attempts: "
            f"{reason}", complete=False,
        )  # fmt: skip
        if outcome != "lease lost":
            self.runtime.queue.bury(job, reason)
            return "dead"
        return outcome

    def _settle(
        self,
        job: Job,
        heartbeat: Heartbeat,
        build_id: int,
        status: str,
        error: str | None,
        *,
        complete: bool = True,
    ) -> str:
        # Write the final status only while the lease is ours: a worker that lost it may be
        # racing the one that took over.
        if not heartbeat.beat():
            log.warning("build %d: lease lost before the final status; left to its owner", build_id)
            return "lease lost"
        with self.runtime.engine.begin() as conn:
            changed = mark_finished(conn, build_id, status, error)
        if changed:
            self.runtime.metrics.builds.labels(status=status).inc()
            log.info("build %d %s%s", build_id, status, f": {error}" if error else "")
        if complete:
            self.runtime.queue.complete(job)
        return status


def run_worker_process(
    settings: Settings, burst: bool = False, *, pipeline: Pipeline | None = None
) -> int:
    """`trainhook worker [--burst]`: one worker in this process until SIGTERM or SIGINT (the
    current stage finishes, then the job is released for another worker). A second signal
    interrupts at once. Returns the number of jobs processed."""
    if not logging.getLogger().handlers:
        configure_logging(os.environ)
    runtime = build_runtime(settings)
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        log.info("signal %d: stopping after the current stage", signum)
        stop.set()

    previous = {}
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGTERM, signal.SIGINT):
            previous[signum] = signal.signal(signum, on_signal)
    worker = Worker(runtime, pipeline=pipeline)
    http = None
    if settings.worker_port >= 0:
        # Every interface: the orchestrator probes and scrapes the pod's address.
        http = WorkerHttp(runtime, worker.pulse, "", settings.worker_port).start()
    try:
        return worker.run(stop, burst=burst)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if http is not None:
            http.close()
        runtime.close()

"""The Cloud Build builder: one remote build runs build → push → deploy ∥ vertex.

The worker supersedes older builds of the branch, bundles the commit with the model, uploads
it to the source bucket, submits the generated request exactly once (worker/cloudbuild/submit.py)
and polls the build to its end, writing the steps' own start and end times as stage events
(worker/cloudbuild/track.py). The google-cloud-build client is made here, in `make_client`,
and injected into the builder.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from trainhook.builds import add_event, mark_finished
from trainhook.db import reading
from trainhook.gcs import make_gcs_client
from trainhook.jsonfiles import read_json
from trainhook.settings import Settings
from worker.builder import BUILDER_STAGES
from worker.cloudbuild.request import build_request, build_tag
from worker.cloudbuild.source import SourceStore
from worker.cloudbuild.submit import (
    CALL_TIMEOUT,
    LOOKUP_DELAYS,
    Submitter,
    transient_retry,
    upload_source,
)
from worker.cloudbuild.supersede import MARKER, stored_cloud_build, supersede_older
from worker.cloudbuild.track import StageEvent, Tracker, status_name
from worker.context import BuildContext
from worker.recorder import clip, latest_statuses
from worker.stage import Interrupted, StageFailed

log = logging.getLogger(__name__)

MAX_POLL_ERRORS = 10
DEFAULT: Any = object()  # the retry of reads: transient_retry()
NO_VERTEX = "no [repos.vertex] configured for this repository"


def make_client(settings: Settings) -> Any:
    """The one place the google-cloud-build client is made. TRAINHOOK_CLOUDBUILD_ENDPOINT
    `http://host:port` selects the REST transport with anonymous credentials (local fakes);
    `https://…` the REST transport at that endpoint with the usual credentials."""
    from google.cloud.devtools import cloudbuild_v1

    endpoint = settings.cloudbuild_endpoint
    if not endpoint:
        return cloudbuild_v1.CloudBuildClient()
    if endpoint.startswith("http://"):
        from google.auth.credentials import AnonymousCredentials

        return cloudbuild_v1.CloudBuildClient(
            transport="rest",
            credentials=AnonymousCredentials(),
            client_options={"api_endpoint": endpoint},
        )
    return cloudbuild_v1.CloudBuildClient(
        transport="rest", client_options={"api_endpoint": endpoint}
    )


class CloudBuilder:
    """Runs the builder stages as one Cloud Build (see `Builder`). The client (a
    google-cloud-build CloudBuildClient) and the source store are injected."""

    stages: tuple[str, ...] = BUILDER_STAGES

    def __init__(
        self,
        settings: Settings,
        client: Any,
        store: SourceStore,
        *,
        lookup_delays: Sequence[float] = LOOKUP_DELAYS,
        call_timeout: float = CALL_TIMEOUT,
        sleep: Callable[[float], None] = time.sleep,
        retry: Any = DEFAULT,
    ) -> None:
        self.settings, self.client, self.store = settings, client, store
        self.parent = f"projects/{settings.gcp_project}/locations/{settings.gcp_region}"
        self.call_timeout, self.sleep = call_timeout, sleep
        self.submitter = Submitter(
            client,
            self.parent,
            lookup_delays=lookup_delays,
            call_timeout=call_timeout,
            sleep=sleep,
            retry=transient_retry() if retry is DEFAULT else retry,
        )

    def deployed_metrics(self, ctx: BuildContext) -> dict[str, Any] | None:
        """metrics.json of the model the last successful Cloud Build of this repository
        deployed (recorded in the source bucket), or None. Never raises."""
        record = self.store.read_deployed(ctx.repo.slug)
        metrics = record.get("metrics") if record else None
        return metrics if isinstance(metrics, dict) else None

    def __call__(self, ctx: BuildContext) -> None:
        """Supersede older builds of the branch, submit (or adopt) this build's Cloud Build
        and follow it to its end. Returns None when it succeeded. Raises StageFailed when it
        failed, timed out or expired (the failed stage carries the reason and log URL);
        Interrupted(ended=True) when it was cancelled (in Cloud Build, in trainhook, or
        superseded: the remote build is cancelled too) and Interrupted when the worker stops
        (the remote build runs on and the next attempt adopts it); the client's errors for
        infrastructure faults. Idempotent: a second call for the same build makes no second
        Cloud Build."""
        ctx.recorder.guard()
        tracked = self.stages if ctx.repo.vertex else self.stages[:-1]
        with reading(ctx.engine) as conn:
            recorded = latest_statuses(conn, ctx.build.id, self.stages)
            known = stored_cloud_build(conn, ctx.build.id)
        if ctx.repo.vertex is None:
            if recorded.get("vertex") == "skipped":  # by an earlier attempt: not twice
                ctx.recorder.done["vertex"] = "skipped"
            else:
                self._write(ctx, [StageEvent("vertex", "skipped", None, NO_VERTEX)], {})
        for old in supersede_older(ctx, self.client, self.parent):
            ctx.log("build", f"superseded older build #{old} of {ctx.build.ref}\n")
        build = self.submitter.existing(ctx)
        tracker = Tracker(tracked, self._success_details(ctx))
        if build is None:
            inputs = upload_source(ctx, self.store)
            build = self.submitter.create(ctx, build_request(self.settings, ctx.repo, inputs))
        else:
            ctx.log("build", f"adopted Cloud Build {build.id} (tag {build_tag(ctx.build.id)})\n")
        if build.id == known:
            # A retried job following the Cloud Build an earlier attempt tracked: start from
            # what that attempt recorded, so that a stale answer (or the same one again)
            # neither moves a stage back nor records a final status a second time.
            self._resume(ctx, tracker, recorded)
        else:
            self._remember(ctx, build)
        self._track(ctx, build, tracker)

    def _resume(self, ctx: BuildContext, tracker: Tracker, recorded: dict[str, str]) -> None:
        for stage in tracker.stages:
            status = recorded.get(stage)
            if status in ("running", "succeeded", "failed", "skipped"):
                tracker.state[stage] = status
                if status != "running":
                    ctx.recorder.done[stage] = status

    def _remember(self, ctx: BuildContext, build: Any) -> None:
        """Store the Cloud Build id at once (see worker/cloudbuild/supersede.py)."""
        self._write(ctx, [StageEvent("build", "pending", None, record_detail(build))], {})
        ctx.log("build", f"Cloud Build {build.id}: {build.log_url}\n")

    # -- tracking ---------------------------------------------------------------------------

    def _track(self, ctx: BuildContext, build: Any, tracker: Tracker) -> None:
        starts: dict[str, datetime | None] = {}
        errors = 0
        while True:
            self._write(ctx, tracker.feed(build), starts)
            if tracker.final is not None:
                return self._conclude(ctx, tracker)
            try:
                ctx.recorder.guard()
            except Interrupted as exc:
                if exc.ended:  # cancelled or superseded meanwhile: stop the remote build too
                    self._cancel(build.id)
                raise
            self.sleep(self.settings.cloudbuild_poll_interval)
            try:
                build = self.submitter.get(build.id)
                errors = 0
            except Exception as exc:
                errors += 1
                if errors >= MAX_POLL_ERRORS:
                    raise
                log.warning("build %d: polling Cloud Build %s: %s", ctx.build.id, build.id, exc)

    def _cancel(self, cloud_id: str) -> None:
        try:
            self.client.cancel_build(
                request={"name": f"{self.parent}/builds/{cloud_id}"}, timeout=self.call_timeout
            )
        except Exception as exc:  # it finished meanwhile, or is gone
            log.info("cancel of Cloud Build %s: %s", cloud_id, exc)

    def _conclude(self, ctx: BuildContext, tracker: Tracker) -> None:
        final = tracker.final
        status = status_name(final.status)
        if status == "SUCCESS":
            record = {
                "build_id": ctx.build.id,
                "sha": ctx.build.sha,
                "image": f"{ctx.repo.image}:{ctx.build.sha}",
                "cloud_build": final.id,
                "metrics": ctx.metrics or read_json(ctx.need_model() / "metrics.json"),
            }
            self.store.record_deployed(ctx.repo.slug, record)
            return
        reason = tracker.reason(final)
        if status == "CANCELLED":
            if ctx.recorder.muted():
                raise Interrupted("lease lost", lease_lost=True)
            with ctx.engine.begin() as conn:
                mark_finished(conn, ctx.build.id, "cancelled", error=reason)
            raise Interrupted(reason, ended=True)
        raise StageFailed(reason)

    def _write(
        self, ctx: BuildContext, events: list[StageEvent], starts: dict[str, datetime | None]
    ) -> None:
        """Append `events` (with their own times) in one transaction and note final ones in
        the recorder, as `Recorder.finish` would."""
        if not events or ctx.recorder.muted():
            return
        with ctx.engine.begin() as conn:
            for e in events:
                detail = None if e.detail is None else clip(e.detail)
                add_event(conn, ctx.build.id, e.stage, e.status, detail=detail, at=e.at)
        for e in events:
            if e.status == "running":
                starts[e.stage] = e.at
            elif e.status in ("succeeded", "failed", "skipped"):
                ctx.recorder.done[e.stage] = e.status
                began, ended = starts.get(e.stage), e.at
                seconds = (ended - began).total_seconds() if began and ended else 0.0
                ctx.recorder.metrics.stage_seconds.labels(stage=e.stage, status=e.status).observe(
                    max(seconds, 0.0)
                )
            ctx.log(e.stage, f"[{e.status}] {e.detail or ''}\n")

    def _success_details(self, ctx: BuildContext) -> dict[str, str]:
        image, deploy = f"{ctx.repo.image}:{ctx.build.sha}", ctx.repo.deploy
        assert deploy is not None
        where = f"deployment/{deploy.deployment} in {deploy.namespace} on {deploy.cluster}"
        return {
            "build": f"built {image} (cache from :latest, deps key {_short(ctx)})",
            "push": f"pushed {image} and :latest",
            "deploy": f"rolled out {where}; health check {deploy.health_path} passed",
            "vertex": f"Vertex AI pipeline {ctx.repo.vertex.pipeline if ctx.repo.vertex else ''}"
            " submitted (not awaited)",
        }


def record_detail(build: Any) -> str:
    """The detail of the `build` stage's `pending` event, written once a Cloud Build exists:
    its id (how a retried job finds it again, worker/cloudbuild/supersede.py) and its log URL
    exactly as the API returned it. The dashboard links that log from this event only
    (service/details.py): no other code writes a `pending` build event, so no text a
    repository controls can pose as it."""
    return f"{MARKER}{build.id} {status_name(build.status)}; logs {build.log_url}"


def _short(ctx: BuildContext) -> str:
    return ctx.keys.deps[:12] if ctx.keys else "unknown"


def make_cloud_builder(settings: Settings) -> CloudBuilder:
    """The builder TRAINHOOK_BUILDER=cloudbuild selects, with its clients made from settings."""
    assert settings.source_bucket is not None
    store = SourceStore(make_gcs_client(settings.gcp_project), settings.source_bucket)
    return CloudBuilder(settings, make_client(settings), store)

"""The Cloud Build builder: one remote build runs build → push → deploy ∥ vertex.

The worker bundles the commit with the model, uploads it to the source bucket, submits the
generated request (worker/cloudbuild_request.py) and polls the build to its end, writing the
steps' own start and end times as the stage events. Submitting is idempotent: every Cloud
Build carries the tag `trainhook-build-N`; before creating one (and after any create whose
answer was lost) the builder looks that tag up and adopts what it finds, so a retried job, a
lost answer or a crash between create and store never makes a second build.
"""

from __future__ import annotations

import itertools
import json
import logging
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from trainhook.builds import add_event, mark_finished
from trainhook.db import reading
from trainhook.settings import Settings
from worker.builder import BUILDER_STAGES
from worker.bundle import bundle_entries, write_bundle
from worker.cloudbuild_request import BuildInputs, build_request, build_tag, repo_tag
from worker.cloudbuild_source import SourceStore, make_storage_client
from worker.cloudbuild_supersede import MARKER, stored_cloud_build, supersede_older
from worker.cloudbuild_track import StageEvent, Tracker, status_name
from worker.context import BuildContext
from worker.recorder import clip
from worker.stage import Interrupted, StageFailed

log = logging.getLogger(__name__)

CALL_TIMEOUT = 60.0
CREATE_ATTEMPTS = 3
LOOKUP_DELAYS = (0.0, 2.0, 5.0)  # re-read the tag after a lost answer: listing may lag
MAX_POLL_ERRORS = 10
DEFAULT: Any = object()  # the retry of reads: transient errors, for up to CALL_TIMEOUT
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


def _refusals() -> tuple[type[Exception], ...]:
    """Answers that mean the request itself is wrong: retrying cannot help."""
    from google.api_core import exceptions as gexc

    # HTTP classes: a REST answer of 400/401/403/404 raises these or their gRPC subclasses.
    return (gexc.BadRequest, gexc.Unauthorized, gexc.Forbidden, gexc.NotFound)


def _transient() -> Any:
    from google.api_core import exceptions as gexc
    from google.api_core.retry import Retry, if_exception_type

    predicate = if_exception_type(
        gexc.ServiceUnavailable, gexc.DeadlineExceeded, gexc.InternalServerError,
        gexc.TooManyRequests,
    )  # fmt: skip
    return Retry(predicate=predicate, initial=0.2, maximum=5.0, timeout=CALL_TIMEOUT)


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
        self.lookup_delays, self.call_timeout, self.sleep = lookup_delays, call_timeout, sleep
        self.retry = _transient() if retry is DEFAULT else retry

    def deployed_metrics(self, ctx: BuildContext) -> dict[str, Any] | None:
        record = self.store.read_deployed(ctx.repo.slug)
        metrics = record.get("metrics") if record else None
        return metrics if isinstance(metrics, dict) else None

    def __call__(self, ctx: BuildContext) -> None:
        ctx.recorder.guard()
        tracked = self.stages if ctx.repo.vertex else self.stages[:-1]
        if ctx.repo.vertex is None:
            self._write(ctx, [StageEvent("vertex", "skipped", None, NO_VERTEX)], {})
        for old in supersede_older(ctx, self.client, self.parent):
            ctx.log("build", f"superseded older build #{old} of {ctx.build.ref}\n")
        build = self._existing(ctx)
        if build is None:
            build = self._create(ctx, build_request(self.settings, ctx.repo, self._inputs(ctx)))
        else:
            ctx.log("build", f"adopted Cloud Build {build.id} (tag {build_tag(ctx.build.id)})\n")
        self._remember(ctx, build)
        self._track(ctx, build, Tracker(tracked, self._success_details(ctx)))

    # -- submitting -------------------------------------------------------------------------

    def _inputs(self, ctx: BuildContext) -> BuildInputs:
        meta = _read_json(ctx.need_model() / "meta.json")
        deps = ctx.keys.deps if ctx.keys else "unknown"
        manifest = {
            "repo": ctx.repo.name,
            "sha": ctx.build.sha,
            "model_key": ctx.keys.model if ctx.keys else meta.get("key"),
            "model_build_id": meta.get("build_id"),
            "trainer_version": meta.get("trainer_version"),
            "deps_key": deps,
        }
        ctx.settings.work_dir.mkdir(parents=True, exist_ok=True)
        scratch = Path(
            tempfile.mkdtemp(prefix=f"source-{ctx.build.id}-", dir=ctx.settings.work_dir)
        )
        ctx.cleanup.callback(shutil.rmtree, scratch, ignore_errors=True)
        entries = bundle_entries(ctx.need_source(), ctx.need_model(), manifest)
        version = f"b{ctx.build.id}-{ctx.build.short_sha}"
        ctx.bundle = write_bundle(entries, scratch / "source.tar.gz", version)
        uri, action = self.store.upload(ctx.repo.slug, ctx.bundle)
        ctx.log("build", f"source {uri} ({len(entries)} files): {action}\n")
        return BuildInputs(ctx.build.id, ctx.build.sha, deps, uri)

    def _existing(self, ctx: BuildContext) -> Any:
        """The Cloud Build of this trainhook build made by an earlier attempt, or None."""
        with reading(ctx.engine) as conn:
            known = stored_cloud_build(conn, ctx.build.id)
        if known:
            from google.api_core.exceptions import NotFound

            try:
                return self._get(known)
            except NotFound:  # look the tag up instead
                pass
        return self._find(ctx, (0.0,))

    def _find(self, ctx: BuildContext, delays: Sequence[float]) -> Any:
        query = {"parent": self.parent, "filter": f'tags="{build_tag(ctx.build.id)}"'}
        for delay in delays:
            if delay:
                self.sleep(delay)
            pager = self.client.list_builds(
                request={**query, "page_size": 20}, retry=self.retry, timeout=self.call_timeout
            )
            mine = [
                b
                for b in itertools.islice(pager, 100)
                if repo_tag(ctx.repo) in b.tags
                and b.substitutions.get("_SHA", ctx.build.sha) == ctx.build.sha
            ]
            if mine:
                return max(mine, key=lambda b: b.create_time)
        return None

    def _create(self, ctx: BuildContext, request: dict[str, Any]) -> Any:
        from google.cloud.devtools.cloudbuild_v1 import Build

        body = Build.from_json(json.dumps(request))
        last: Exception | None = None
        for attempt in range(1, CREATE_ATTEMPTS + 1):
            try:
                operation = self.client.create_build(
                    request={"parent": self.parent, "build": body},
                    retry=None,  # never blindly: a lost answer is resolved through the tag
                    timeout=self.call_timeout,
                )
                return operation.metadata.build
            except _refusals() as exc:
                raise StageFailed(f"Cloud Build refused the build request: {exc}") from None
            except Exception as exc:
                last = exc
                ctx.log(
                    "build",
                    f"create attempt {attempt}: no answer ({type(exc).__name__}: {exc}); "
                    "looking for the build by its tag\n",
                )
                found = self._find(ctx, self.lookup_delays)
                if found is not None:
                    ctx.log("build", f"found Cloud Build {found.id}: adopted\n")
                    return found
        raise RuntimeError(f"Cloud Build create failed {CREATE_ATTEMPTS} times: {last}")

    def _remember(self, ctx: BuildContext, build: Any) -> None:
        """Store the Cloud Build id at once (see worker/cloudbuild_supersede.py)."""
        detail = f"{MARKER}{build.id} {status_name(build.status)}; logs {build.log_url}"
        self._write(ctx, [StageEvent("build", "pending", None, detail)], {})
        ctx.log("build", f"Cloud Build {build.id}: {build.log_url}\n")

    # -- tracking ---------------------------------------------------------------------------

    def _get(self, cloud_id: str) -> Any:
        return self.client.get_build(
            request={"name": f"{self.parent}/builds/{cloud_id}"},
            retry=self.retry,
            timeout=self.call_timeout,
        )

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
                build = self._get(build.id)
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
                "metrics": ctx.metrics,
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


def _short(ctx: BuildContext) -> str:
    return ctx.keys.deps[:12] if ctx.keys else "unknown"


def _read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def make_cloud_builder(settings: Settings) -> CloudBuilder:
    """The builder TRAINHOOK_BUILDER=cloudbuild selects, with its clients made from settings."""
    assert settings.source_bucket is not None
    store = SourceStore(make_storage_client(settings), settings.source_bucket)
    return CloudBuilder(settings, make_client(settings), store)

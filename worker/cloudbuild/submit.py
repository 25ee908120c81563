"""Submitting one build's Cloud Build exactly once.

Cloud Build has no idempotency key, so the tag `trainhook-build-N` is one: before creating,
the submitter adopts the build recorded for this trainhook build (its id is stored in a stage
event) or, failing that, any Cloud Build carrying the tag; a create whose answer is lost (503,
timeout, dropped connection) is followed by the same lookup, a few times, before it is tried
again. So a retried job, a lost answer or a crash between create and store never makes a
second build.
"""

from __future__ import annotations

import itertools
import json
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from trainhook.db import reading
from trainhook.jsonfiles import read_json
from worker.bundle import bundle_entries, write_bundle
from worker.cloudbuild.request import BuildInputs, build_tag, repo_tag
from worker.cloudbuild.source import SourceStore
from worker.cloudbuild.supersede import stored_cloud_build
from worker.context import BuildContext
from worker.stage import StageFailed

CALL_TIMEOUT = 60.0
CREATE_ATTEMPTS = 3
LOOKUP_DELAYS = (0.0, 2.0, 5.0)  # re-read the tag after a lost answer: listing may lag


def _refusals() -> tuple[type[Exception], ...]:
    """Answers that mean the request itself is wrong: retrying cannot help."""
    from google.api_core import exceptions as gexc

    # HTTP classes: a REST answer of 400/401/403/404 raises these or their gRPC subclasses.
    return (gexc.BadRequest, gexc.Unauthorized, gexc.Forbidden, gexc.NotFound)


def transient_retry() -> Any:
    """The retry of reads (get, list): transient errors, for up to CALL_TIMEOUT."""
    from google.api_core import exceptions as gexc
    from google.api_core.retry import Retry, if_exception_type

    predicate = if_exception_type(
        gexc.ServiceUnavailable, gexc.DeadlineExceeded, gexc.InternalServerError,
        gexc.TooManyRequests,
    )  # fmt: skip
    return Retry(predicate=predicate, initial=0.2, maximum=5.0, timeout=CALL_TIMEOUT)


def upload_source(ctx: BuildContext, store: SourceStore) -> BuildInputs:
    """Bundle the checkout with the model (worker/bundle.py, as the local builder does) in a
    scratch dir removed with the build, upload it under its digest; returns the inputs of the
    build request. Deterministic: the same commit and model give the same object."""
    meta = read_json(ctx.need_model() / "meta.json")
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
    scratch = Path(tempfile.mkdtemp(prefix=f"source-{ctx.build.id}-", dir=ctx.settings.work_dir))
    ctx.cleanup.callback(shutil.rmtree, scratch, ignore_errors=True)
    entries = bundle_entries(ctx.need_source(), ctx.need_model(), manifest)
    version = f"b{ctx.build.id}-{ctx.build.short_sha}"
    ctx.bundle = write_bundle(entries, scratch / "source.tar.gz", version)
    uri, action = store.upload(ctx.repo.slug, ctx.bundle)
    ctx.log("build", f"source {uri} ({len(entries)} files): {action}\n")
    return BuildInputs(ctx.build.id, ctx.build.sha, deps, uri)


class Submitter:
    """Finds or creates the Cloud Build of a trainhook build, through an injected client."""

    def __init__(
        self,
        client: Any,
        parent: str,
        *,
        lookup_delays: Sequence[float] = LOOKUP_DELAYS,
        call_timeout: float = CALL_TIMEOUT,
        sleep: Callable[[float], None] = time.sleep,
        retry: Any = None,
    ) -> None:
        self.client, self.parent = client, parent
        self.lookup_delays, self.call_timeout, self.sleep = lookup_delays, call_timeout, sleep
        self.retry = retry

    def existing(self, ctx: BuildContext) -> Any:
        """The Cloud Build an earlier attempt made for this trainhook build (by its stored id,
        else by its tag), or None. Reads only."""
        with reading(ctx.engine) as conn:
            known = stored_cloud_build(conn, ctx.build.id)
        if known:
            from google.api_core.exceptions import NotFound

            try:
                return self.get(known)
            except NotFound:  # look the tag up instead
                pass
        return self.find(ctx, (0.0,))

    def find(self, ctx: BuildContext, delays: Sequence[float]) -> Any:
        """The newest Cloud Build tagged `trainhook-build-N` for this repository and commit,
        listing once after each delay in `delays`; None when none appears. Raises the
        client's errors when listing fails beyond its retry."""
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

    def create(self, ctx: BuildContext, request: dict[str, Any]) -> Any:
        """Create the Cloud Build for `request` and return it (a Build). Idempotent: after an
        answer that never came it adopts the build its tag finds, and creates again only
        when none exists. Raises StageFailed when Cloud Build refuses the request (400,
        401, 403, 404: retrying cannot help), RuntimeError after CREATE_ATTEMPTS lost answers
        with nothing to adopt (an infrastructure fault: the job is retried)."""
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
                found = self.find(ctx, self.lookup_delays)
                if found is not None:
                    ctx.log("build", f"found Cloud Build {found.id}: adopted\n")
                    return found
        raise RuntimeError(f"Cloud Build create failed {CREATE_ATTEMPTS} times: {last}")

    def get(self, cloud_id: str) -> Any:
        """The Build `cloud_id` now; raises NotFound or the client's errors after its retry."""
        return self.client.get_build(
            request={"name": f"{self.parent}/builds/{cloud_id}"},
            retry=self.retry,
            timeout=self.call_timeout,
        )

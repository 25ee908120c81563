"""The source bucket (TRAINHOOK_SOURCE_BUCKET): content-addressed source bundles that Cloud
Build builds from, and the record of the model each repository has deployed (for the gate)."""

from __future__ import annotations

import json
import logging
from typing import Any

from trainhook.gcs import split_bucket
from worker.context import Bundle

log = logging.getLogger(__name__)

CAS_ATTEMPTS = 5


def _precondition_failed(exc: Exception) -> bool:
    from google.api_core.exceptions import PreconditionFailed

    return isinstance(exc, PreconditionFailed)


class SourceStore:
    """`gs://bucket/prefix`: `sources/<slug>/<sha256>.tar.gz` and `deployed/<slug>.json`."""

    def __init__(self, client: Any, location: str) -> None:
        self.client = client
        self.bucket_name, self.prefix = split_bucket(location)
        self.bucket = client.bucket(self.bucket_name)

    def _name(self, *parts: str) -> str:
        return "/".join(p for p in (self.prefix, *parts) if p)

    def source_name(self, slug: str, digest: str) -> str:
        return self._name("sources", slug, f"{digest}.tar.gz")

    def upload(self, slug: str, bundle: Bundle) -> tuple[str, str]:
        """Upload `bundle` under its digest; returns (gs:// URI, what happened). Idempotent:
        an object already there is left alone (its name is its content), and of two workers
        uploading at once one creates it (`if_generation_match=0`) and the other finds it."""
        name = self.source_name(slug, bundle.digest)
        uri = f"gs://{self.bucket_name}/{name}"
        blob = self.bucket.blob(name)
        if blob.exists():
            return uri, "already uploaded"
        try:
            blob.upload_from_filename(
                str(bundle.path), content_type="application/gzip", if_generation_match=0
            )
        except Exception as exc:
            if not _precondition_failed(exc):
                raise
            return uri, "uploaded meanwhile by another worker"
        return uri, f"uploaded {bundle.size} bytes"

    def _deployed_name(self, slug: str) -> str:
        return self._name("deployed", f"{slug}.json")

    def read_deployed(self, slug: str) -> dict[str, Any] | None:
        """The record of the release `slug` serves ({build_id, sha, image, metrics}), or None
        when none was recorded. Never raises: an unreadable record counts as none."""
        try:
            blob = self.bucket.get_blob(self._deployed_name(slug))
            if blob is None:
                return None
            value = json.loads(blob.download_as_bytes())
        except Exception as exc:
            log.warning("deployed record of %s unreadable: %s", slug, exc)
            return None
        return value if isinstance(value, dict) else None

    def record_deployed(self, slug: str, record: dict[str, Any]) -> bool:
        """Store `record` as what `slug` serves unless a newer build's record is there already
        (builds can finish out of order). Compare-and-swap on the object generation; returns
        whether this record was written."""
        name = self._deployed_name(slug)
        data = json.dumps(record, sort_keys=True).encode()
        for _ in range(CAS_ATTEMPTS):
            blob = self.bucket.get_blob(name)
            generation = 0
            if blob is not None:
                generation = blob.generation
                try:
                    current = json.loads(blob.download_as_bytes())
                except ValueError:
                    current = {}
                if int(current.get("build_id") or 0) >= int(record["build_id"]):
                    return False
            try:
                self.bucket.blob(name).upload_from_string(
                    data, content_type="application/json", if_generation_match=generation
                )
                return True
            except Exception as exc:
                if not _precondition_failed(exc):
                    raise
        raise RuntimeError(f"{name}: changed {CAS_ATTEMPTS} times while being written")

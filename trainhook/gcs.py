"""Google Cloud Storage helpers shared by every user of a bucket (the artifact store, gs://
training data, the Cloud Build source bucket): the one gs:// URL parser and the one client
factory. google-cloud-storage is imported only when a client is made."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from google.cloud.storage import Client

BUCKET_RE = re.compile(r"[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]")
PREFIX_RE = re.compile(r"[A-Za-z0-9._/-]*")


def parse_gs_url(url: str) -> tuple[str, str]:
    """(bucket, object name or prefix) of `gs://bucket/rest`; raises ValueError naming the
    problem. The rest may be empty."""
    if not url.startswith("gs://"):
        raise ValueError(f"{url!r} is not a gs:// URL")
    bucket, _, rest = url[len("gs://") :].partition("/")
    if not BUCKET_RE.fullmatch(bucket) or ".." in bucket:
        raise ValueError(f"{url!r}: {bucket!r} is not a valid bucket name")
    if any(c in rest for c in "\r\n\x00") or "//" in rest:
        raise ValueError(f"{url!r}: the object name is not valid")
    return bucket, rest


def make_gcs_client(project: str | None = None) -> Client:
    """The one place a Cloud Storage client is made: application default credentials and
    `project` (None: the default project), or the emulator named by STORAGE_EMULATOR_HOST
    (no credentials needed)."""
    from google.cloud import storage

    return storage.Client(project=project)


def split_bucket(value: str) -> tuple[str, str]:
    """`gs://bucket/some/prefix` -> ("bucket", "some/prefix") for a bucket used as a folder
    (the Cloud Build source bucket): the prefix is also limited to A-Z a-z 0-9 . _ / - so it
    can be spliced into build steps. Raises ValueError if malformed."""
    if not value.startswith("gs://"):
        raise ValueError("must start with gs://")
    bucket, _, prefix = value[len("gs://") :].partition("/")
    prefix = prefix.strip("/")
    if not BUCKET_RE.fullmatch(bucket) or ".." in bucket:
        raise ValueError(f"{bucket!r} is not a bucket name")
    if not PREFIX_RE.fullmatch(prefix) or ".." in prefix.split("/"):
        raise ValueError(f"prefix {prefix!r} has characters outside A-Z a-z 0-9 . _ / -")
    return bucket, prefix

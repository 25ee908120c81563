"""Content ids of gs:// training data: the object's md5 (or crc32c and generation) from its
metadata, and the download of exactly the generation that was keyed."""

from __future__ import annotations

import base64
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trainhook.gcs import parse_gs_url

if TYPE_CHECKING:
    from google.cloud.storage import Client

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GcsObject:
    url: str
    bucket: str
    name: str
    generation: int
    size: int
    md5: str | None  # hex
    crc32c: str | None  # hex

    @property
    def content_id(self) -> str:
        """md5 names the content exactly; without it (composite objects) crc32c is only 32
        bits, so the generation is added (a rewrite of the same bytes then retrains)."""
        if self.md5:
            return f"gs:md5:{self.md5}"
        return f"gs:crc32c:{self.crc32c}@{self.generation}"


def _hex(value: str | None) -> str | None:
    return base64.b64decode(value).hex() if value else None


def gcs_object(client: Client, url: str) -> GcsObject | None:
    """The metadata of `gs://bucket/name` (no content read), or None when it does not exist."""
    bucket, name = parse_gs_url(url)
    blob: Any = client.bucket(bucket).get_blob(name)
    if blob is None:
        return None
    return GcsObject(
        url, bucket, name, int(blob.generation), int(blob.size or 0), _hex(blob.md5_hash),
        _hex(blob.crc32c),
    )  # fmt: skip


def download_object(client: Client, obj: GcsObject, dest: Path) -> Path:
    """Download exactly the generation that was keyed (a newer upload is not this data)."""
    blob = client.bucket(obj.bucket).blob(obj.name, generation=obj.generation)
    dest.parent.mkdir(parents=True, exist_ok=True)
    blob.download_to_filename(str(dest))
    return dest

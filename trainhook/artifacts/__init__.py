"""The artifact store: entries of files, verified on restore, shared by every worker.

An entry is a flat set of files under `(kind, key)`, for instance the model trained for a
model key (`models/<key>`: model.joblib, vectorizer.joblib, metrics.json, model_card.md) or
an NLTK data tarball (`nltk/<key>`). Its manifest lists each file's size and sha256 and a
free-form `meta` (which build produced it, from which inputs). A manifest is only ever
published complete and after its files; restoring checks every file against it, so a
corrupt, partial or tampered entry is a miss with a warning (and is evicted so that the
next publisher replaces it), never a crash or a wrong model.

Two implementations of `ArtifactStore`, chosen by `TRAINHOOK_ARTIFACTS` through
`open_store`: `LocalStore` (a directory; entries appear by renaming a finished temp dir)
and `GcsStore` (google-cloud-storage; files are stored content-addressed, the manifest is
created with `if_generation_match=0` so that of two racing publishers exactly one wins and
the other uses the winner's entry).

A forced build publishes with `replace=True`: its entry replaces whatever is stored (locally
the old entry is moved aside and the new one renamed into place; on GCS the manifest is
rewritten with `if_generation_match` set to the generation it replaces, a compare-and-swap
retried when another publisher got in between), so a forced build never ends up with
another build's entry.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from trainhook.artifacts.gcs import GcsStore
from trainhook.artifacts.local import LocalStore
from trainhook.artifacts.manifest import MANIFEST, Entry, FileRecord, StoreError, Unusable, Warn
from trainhook.gcs import make_gcs_client, parse_gs_url

if TYPE_CHECKING:
    from google.cloud.storage import Client

__all__ = [
    "MANIFEST",
    "ArtifactStore",
    "Entry",
    "FileRecord",
    "GcsStore",
    "LocalStore",
    "StoreError",
    "Unusable",
    "open_store",
    "scratch_dir",
]


class ArtifactStore(Protocol):
    """Where cache entries live. Safe to use from several threads and processes at once."""

    @property
    def location(self) -> str:
        """Where the store is (a directory or `gs://bucket/prefix`), for messages."""
        ...

    def lookup(self, kind: str, key: str, warn: Warn | None = None) -> Entry | None:
        """The entry for (kind, key) when its manifest is valid and every file it lists is
        present with its size; None otherwise (a broken entry also calls `warn`). Reads no
        file content: this is the cheap check the cache decision makes."""
        ...

    def fetch(self, kind: str, key: str, dest: Path, warn: Warn | None = None) -> Entry | None:
        """Restore the entry's files into directory `dest` (created), each checked against
        the manifest's size and sha256. Returns None when there is no usable entry; a corrupt
        one calls `warn`, is evicted, and leaves nothing in `dest`."""
        ...

    def publish(
        self,
        kind: str,
        key: str,
        source: Path,
        meta: Mapping[str, Any],
        warn: Warn | None = None,
        *,
        replace: bool = False,
    ) -> tuple[Entry, bool]:
        """Store every regular file directly in `source` as the entry for (kind, key).
        Returns (entry, True), or (the entry someone else published, False) when a usable
        one exists already or appears meanwhile. A broken entry in the way is replaced.
        With `replace` (a forced build) a usable entry is replaced too, and the result is
        always (this entry, True): the forced build's own result wins."""
        ...

    def evict(self, entry: Entry) -> bool:
        """Remove `entry` when it is still the published one; True when it was removed."""
        ...


def open_store(location: str, *, client: Client | None = None) -> ArtifactStore:
    """The store at `location` (TRAINHOOK_ARTIFACTS): a directory, or `gs://bucket/prefix`
    (using `client` when given, else a new one)."""
    if location.startswith("gs://"):
        bucket, prefix = parse_gs_url(location)
        return GcsStore(client if client is not None else make_gcs_client(), bucket, prefix)
    return LocalStore(Path(location))


@contextlib.contextmanager
def scratch_dir(parent: Path, prefix: str) -> Iterator[Path]:
    """A fresh temp dir under `parent`, removed on exit."""
    parent.mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)

"""`GcsStore`: the artifact store in a bucket (TRAINHOOK_ARTIFACTS=gs://bucket/prefix)."""

from __future__ import annotations

import base64
import contextlib
import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trainhook.artifacts.manifest import (
    CHUNK,
    MANIFEST,
    Entry,
    FileRecord,
    StoreError,
    Unusable,
    Warn,
    check_file,
    check_name,
    empty_dir,
    file_record,
    fresh_dir,
    manifest_bytes,
    parse_manifest,
    source_files,
    warn_about,
)

if TYPE_CHECKING:
    from google.cloud.storage import Bucket, Client


def _md5_base64(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(CHUNK), b""):
            digest.update(block)
    return base64.b64encode(digest.digest()).decode("ascii")


class GcsStore:
    """`gs://bucket/prefix/<kind>/<key>/manifest.json` and the files, content-addressed, as
    `.../<kind>/<key>/objects/<sha256>`. Files go up first (racing publishers never write one
    name with different bytes), then the manifest with `if_generation_match=0`: whoever gets
    the 412 lost the race and uses the winner's entry. Preconditions are honoured on simple
    uploads, which every manifest is (a few hundred bytes)."""

    def __init__(self, client: Client, bucket: str, prefix: str = "") -> None:
        self.client = client
        self.bucket_name = bucket
        self.prefix = prefix.strip("/")
        self._bucket: Bucket = client.bucket(bucket)

    @property
    def location(self) -> str:
        return f"gs://{self.bucket_name}/{self.prefix}".rstrip("/")

    def _name(self, kind: str, key: str, *rest: str) -> str:
        check_name(kind, key)
        return "/".join(part for part in (self.prefix, kind, key, *rest) if part)

    def _read(self, kind: str, key: str) -> tuple[Entry | None, int | None, str | None]:
        """(entry, None, None), (None, None, None) when absent, or (None, generation of the
        broken manifest, why) when something unusable is published."""
        from google.api_core import exceptions

        blob = self._bucket.blob(self._name(kind, key, MANIFEST))
        try:
            data = blob.download_as_bytes()
        except exceptions.NotFound:
            return None, None, None
        generation = blob.generation
        try:
            files, meta = parse_manifest(data, kind, key)
            present = {
                item.name.rsplit("/", 1)[-1]: item.size
                for item in self.client.list_blobs(
                    self._bucket, prefix=self._name(kind, key, "objects") + "/"
                )
            }
            for name, record in files.items():
                size = present.get(record.sha256)
                if size is None:
                    raise Unusable(f"{name} is missing (partial entry)")
                if int(size) != record.size:
                    raise Unusable(f"{name} has {size} bytes, the manifest says {record.size}")
        except Unusable as exc:
            return None, generation, str(exc)
        entry = Entry(kind, key, files, meta, self._url(kind, key), str(generation))
        return entry, None, None

    def _url(self, kind: str, key: str) -> str:
        return f"gs://{self.bucket_name}/{self._name(kind, key)}"

    def lookup(self, kind: str, key: str, warn: Warn | None = None) -> Entry | None:
        entry, _, problem = self._read(kind, key)
        if problem is not None:
            warn_about(warn, f"{kind} entry {key[:12]} in {self.location} is unusable: {problem}")
        return entry

    def fetch(self, kind: str, key: str, dest: Path, warn: Warn | None = None) -> Entry | None:
        from google.api_core import exceptions

        entry = self.lookup(kind, key, warn)
        if entry is None:
            return None
        fresh_dir(dest)
        try:
            return self._fetch(entry, dest, warn)
        except exceptions.NotFound:
            # A forced build replaced the entry while we read it, removing the old files:
            # restore the new one (once; a vanished file of that one is damage).
            newer = self.lookup(kind, key, warn)
            if newer is None or newer.version == entry.version:
                self._vanished(entry, dest, warn)
                return None
            empty_dir(dest)
            try:
                return self._fetch(newer, dest, warn)
            except exceptions.NotFound:
                self._vanished(newer, dest, warn)
                return None

    def _vanished(self, entry: Entry, dest: Path, warn: Warn | None) -> None:
        empty_dir(dest)
        where = f"{entry.kind} entry {entry.key[:12]} in {self.location}"
        warn_about(warn, f"{where} is unusable: a file vanished; evicted")
        self.evict(entry)

    def _fetch(self, entry: Entry, dest: Path, warn: Warn | None) -> Entry | None:
        """Restore `entry` into the empty `dest`; NotFound (a file gone) is the caller's."""
        from google.api_core import exceptions
        from google.cloud.storage.exceptions import DataCorruption

        kind, key = entry.kind, entry.key
        try:
            for name, record in entry.files.items():
                blob = self._bucket.blob(self._name(kind, key, "objects", record.sha256))
                # Downloaded whole, then hashed: a retried download may rewind the file.
                blob.download_to_filename(str(dest / name))
                actual = file_record(dest / name)
                check_file(name, record, actual.size, actual.sha256)
        except exceptions.NotFound:
            raise
        except (Unusable, DataCorruption) as exc:
            empty_dir(dest)
            why = "a file is corrupt" if isinstance(exc, DataCorruption) else str(exc)
            where = f"{kind} entry {key[:12]} in {self.location}"
            warn_about(warn, f"{where} is unusable: {why}; evicted")
            self.evict(entry)
            return None
        except (OSError, exceptions.GoogleAPIError) as exc:
            empty_dir(dest)
            warn_about(warn, f"{kind} entry {key[:12]} could not be restored: {exc}")
            return None
        return entry

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
        from google.api_core import exceptions

        files = source_files(source)
        entry, broken, problem = self._read(kind, key)
        if entry is not None and not replace:
            return entry, False
        records = {name: file_record(path) for name, path in files.items()}
        for name, path in files.items():
            self._upload_object(self._name(kind, key, "objects", records[name].sha256), path)
        document = manifest_bytes(kind, key, records, meta)
        for _ in range(5):
            if problem is not None:
                warn_about(warn, f"replacing the unusable {kind} entry {key[:12]}: {problem}")
            # Create-only, or (replacing) a compare-and-swap on the generation read: a
            # manifest written meanwhile by anyone else makes this fail, and we look again.
            expected = int(entry.version) if entry is not None else (broken or 0)
            manifest = self._bucket.blob(self._name(kind, key, MANIFEST))
            try:
                manifest.upload_from_string(
                    document,
                    content_type="application/json",
                    if_generation_match=expected,
                )
            except exceptions.PreconditionFailed:
                entry, broken, problem = self._read(kind, key)
                if entry is not None and not replace:
                    self._drop_unreferenced(kind, key, records, entry)
                    return entry, False
                continue
            if entry is not None:
                # The replaced entry's files this one does not use. A reader still fetching
                # them gets NotFound and looks again (see fetch).
                self._drop_unreferenced(kind, key, entry.files, records)
            version = str(manifest.generation)
            return Entry(kind, key, records, dict(meta), self._url(kind, key), version), True
        raise StoreError(f"could not publish {kind} entry {key[:12]} in {self.location}")

    def _upload_object(self, name: str, path: Path) -> None:
        """Upload a content-addressed object unless an intact one is there already."""
        from google.api_core import exceptions

        blob = self._bucket.blob(name)
        try:
            blob.upload_from_filename(str(path), if_generation_match=0)
            return
        except exceptions.PreconditionFailed:
            pass
        existing = self._bucket.get_blob(name)
        if existing is not None and existing.md5_hash == _md5_base64(path):
            return  # the very same bytes (another publisher, or an earlier attempt)
        # A damaged object under this name (bit rot, a hand edit): replace it.
        blob.upload_from_filename(str(path))

    def _drop_unreferenced(
        self,
        kind: str,
        key: str,
        ours: Mapping[str, FileRecord],
        theirs: Entry | Mapping[str, FileRecord],
    ) -> None:
        """Remove the objects of `ours` that `theirs` does not use: after a lost race, ours
        are the uploads the winner does not use; after a replacement, the replaced entry's."""
        files = theirs.files if isinstance(theirs, Entry) else theirs
        keep = {record.sha256 for record in files.values()}
        for record in ours.values():
            if record.sha256 not in keep:
                with contextlib.suppress(Exception):
                    self._bucket.blob(self._name(kind, key, "objects", record.sha256)).delete()

    def evict(self, entry: Entry) -> bool:
        from google.api_core import exceptions

        blob = self._bucket.blob(self._name(entry.kind, entry.key, MANIFEST))
        try:
            blob.delete(if_generation_match=int(entry.version))
        except (exceptions.NotFound, exceptions.PreconditionFailed):
            return False
        return True

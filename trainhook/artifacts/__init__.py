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

import base64
import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from google.cloud.storage import Bucket, Client

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
SCHEMA = 1
KIND_RE = re.compile(r"[a-z][a-z0-9-]{0,31}")
KEY_RE = re.compile(r"[0-9a-f]{16,128}")
NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")
BUCKET_RE = re.compile(r"[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]")
CHUNK = 1 << 20

Warn = Callable[[str], None]


class StoreError(Exception):
    """The store cannot be used at all (bad location, unreachable bucket)."""


class Unusable(Exception):
    """An entry exists but cannot be used: corrupt, partial or tampered with."""


@dataclass(frozen=True)
class FileRecord:
    size: int
    sha256: str


@dataclass(frozen=True)
class Entry:
    """A complete entry as its manifest describes it. `version` identifies this publication
    (a GCS generation, or the local manifest's inode and mtime): eviction only removes the
    entry it was given, never a newer one."""

    kind: str
    key: str
    files: Mapping[str, FileRecord]
    meta: Mapping[str, Any]
    location: str
    version: str = field(default="", compare=False)

    @property
    def build_id(self) -> int | None:
        value = self.meta.get("build_id")
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    @property
    def size(self) -> int:
        return sum(record.size for record in self.files.values())


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


def _warn(warn: Warn | None, message: str) -> None:
    log.warning("%s", message)
    if warn is not None:
        warn(message)


def check_name(kind: str, key: str) -> None:
    if not KIND_RE.fullmatch(kind):
        raise ValueError(f"{kind!r} is not an entry kind")
    if not KEY_RE.fullmatch(key):
        raise ValueError(f"{key!r} is not a cache key (16-128 lowercase hex digits)")


def source_files(source: Path) -> dict[str, Path]:
    """The files of an entry to publish: the regular files directly in `source`."""
    files = {}
    for path in sorted(source.iterdir()):
        if path.name == MANIFEST or not NAME_RE.fullmatch(path.name):
            raise ValueError(f"{path.name!r} cannot be stored in an entry")
        if path.is_symlink() or not path.is_file():
            raise ValueError(f"{path.name!r} is not a regular file")
        files[path.name] = path
    if not files:
        raise ValueError(f"{source} holds no file to store")
    return files


def file_record(path: Path) -> FileRecord:
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(CHUNK), b""):
            digest.update(block)
            size += len(block)
    return FileRecord(size, digest.hexdigest())


def manifest_bytes(
    kind: str, key: str, files: Mapping[str, FileRecord], meta: Mapping[str, Any]
) -> bytes:
    document = {
        "schema": SCHEMA,
        "kind": kind,
        "key": key,
        "files": {name: {"size": r.size, "sha256": r.sha256} for name, r in sorted(files.items())},
        "meta": dict(meta),
    }
    return (json.dumps(document, indent=2, sort_keys=True) + "\n").encode("utf-8")


def parse_manifest(
    data: bytes, kind: str, key: str
) -> tuple[dict[str, FileRecord], dict[str, Any]]:
    """The files and meta of a manifest; raises Unusable naming what is wrong."""
    try:
        document = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise Unusable("its manifest is not valid JSON (torn or corrupt)") from None
    if not isinstance(document, dict) or document.get("schema") != SCHEMA:
        raise Unusable("its manifest has an unknown schema")
    if document.get("kind") != kind or document.get("key") != key:
        raise Unusable(
            f"its manifest describes {document.get('kind')}/{document.get('key')} (moved?)"
        )
    raw_files, meta = document.get("files"), document.get("meta")
    if not isinstance(raw_files, dict) or not raw_files or not isinstance(meta, dict):
        raise Unusable("its manifest lists no files")
    files = {}
    for name, record in raw_files.items():
        ok = (
            isinstance(name, str)
            and NAME_RE.fullmatch(name)
            and isinstance(record, dict)
            and isinstance(record.get("size"), int)
            and record["size"] >= 0
            and isinstance(record.get("sha256"), str)
            and re.fullmatch(r"[0-9a-f]{64}", record["sha256"])
        )
        if not ok:
            raise Unusable(f"its manifest has a malformed record for {name!r}")
        files[name] = FileRecord(record["size"], record["sha256"])
    return files, meta


class _HashingWriter:
    """A binary file that hashes what is written to it (downloads are checked as they land)."""

    def __init__(self, stream: IO[bytes]) -> None:
        self.stream = stream
        self.digest = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        self.size += len(data)
        return self.stream.write(data)

    def flush(self) -> None:
        self.stream.flush()


def _md5_base64(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(CHUNK), b""):
            digest.update(block)
    return base64.b64encode(digest.digest()).decode("ascii")


def _check(name: str, record: FileRecord, size: int, sha256: str) -> None:
    if size != record.size:
        raise Unusable(f"{name} has {size} bytes, the manifest says {record.size} (partial?)")
    if sha256 != record.sha256:
        raise Unusable(f"{name} does not match its sha256 in the manifest (corrupt)")


def _fresh_dir(dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    if any(dest.iterdir()):
        raise ValueError(f"{dest} is not empty")


def _empty(dest: Path) -> None:
    for path in dest.iterdir():
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


def _fsync(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class LocalStore:
    """`root/<kind>/<key>/` holds the files and manifest.json. An entry is written into a
    temp dir beside it, flushed, then renamed into place: readers never see a torn entry,
    and of two racing publishers the first rename wins."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    @property
    def location(self) -> str:
        return str(self.root)

    def entry_dir(self, kind: str, key: str) -> Path:
        check_name(kind, key)
        return self.root / kind / key

    def _read(self, kind: str, key: str) -> Entry | None:
        """The entry, None when absent; raises Unusable when something broken is there."""
        folder = self.entry_dir(kind, key)
        manifest = folder / MANIFEST
        try:
            with manifest.open("rb") as stream:
                data = stream.read()
                info = os.fstat(stream.fileno())
        except FileNotFoundError:
            if folder.exists():
                raise Unusable("it has no manifest (an unfinished or older entry)") from None
            return None
        except OSError as exc:
            raise Unusable(f"its manifest cannot be read: {exc}") from None
        files, meta = parse_manifest(data, kind, key)
        for name, record in files.items():
            try:
                size = (folder / name).stat().st_size
            except OSError:
                raise Unusable(f"{name} is missing (partial entry)") from None
            if size != record.size:
                raise Unusable(f"{name} has {size} bytes, the manifest says {record.size}")
        version = f"{info.st_ino}:{info.st_mtime_ns}"
        return Entry(kind, key, files, meta, str(folder), version)

    def lookup(self, kind: str, key: str, warn: Warn | None = None) -> Entry | None:
        try:
            return self._read(kind, key)
        except Unusable as exc:
            _warn(warn, f"{kind} entry {key[:12]} in {self.location} is unusable: {exc}")
            return None

    def fetch(self, kind: str, key: str, dest: Path, warn: Warn | None = None) -> Entry | None:
        entry = self.lookup(kind, key, warn)
        if entry is None:
            return None
        _fresh_dir(dest)
        folder = Path(entry.location)
        try:
            for name, record in entry.files.items():
                with (folder / name).open("rb") as src, (dest / name).open("wb") as out:
                    writer = _HashingWriter(out)
                    shutil.copyfileobj(src, writer, CHUNK)
                _check(name, record, writer.size, writer.digest.hexdigest())
        except Unusable as exc:
            _empty(dest)
            _warn(warn, f"{kind} entry {key[:12]} in {self.location} is unusable: {exc}; evicted")
            self.evict(entry)
            return None
        except OSError as exc:
            _empty(dest)
            _warn(warn, f"{kind} entry {key[:12]} could not be restored: {exc}")
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
        final = self.entry_dir(kind, key)
        files = source_files(source)
        existing = self.lookup(kind, key, warn)
        if existing is not None and not replace:
            return existing, False
        final.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".tmp-{key[:16]}-", dir=final.parent))
        try:
            staging.chmod(0o755)  # it becomes the entry
            records = {}
            for name, path in files.items():
                with path.open("rb") as src, (staging / name).open("wb") as out:
                    writer = _HashingWriter(out)
                    shutil.copyfileobj(src, writer, CHUNK)
                    out.flush()
                    os.fsync(out.fileno())
                records[name] = FileRecord(writer.size, writer.digest.hexdigest())
            (staging / MANIFEST).write_bytes(manifest_bytes(kind, key, records, meta))
            _fsync(staging / MANIFEST)
            _fsync(staging)
            for _ in range(5):
                try:
                    os.rename(staging, final)
                except OSError:
                    if replace:
                        # Readers see the old entry, then none, then this one: never a mix.
                        self._move_aside(final)
                        continue
                    try:
                        theirs = self._read(kind, key)
                    except Unusable as exc:
                        _warn(warn, f"replacing the unusable {kind} entry {key[:12]}: {exc}")
                        theirs = None
                        self._move_aside(final)
                    if theirs is not None:
                        return theirs, False
                    continue
                _fsync(final.parent)
                entry = self._read(kind, key)
                assert entry is not None
                return entry, True
            raise OSError(f"could not publish {kind} entry {key[:12]} in {self.location}")
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def evict(self, entry: Entry) -> bool:
        folder = self.entry_dir(entry.kind, entry.key)
        try:
            info = (folder / MANIFEST).stat()
        except FileNotFoundError:
            info = None
        if info is not None and f"{info.st_ino}:{info.st_mtime_ns}" != entry.version:
            return False  # replaced meanwhile by a newer publication
        return self._move_aside(folder)

    def _move_aside(self, folder: Path) -> bool:
        aside = Path(tempfile.mkdtemp(prefix=".evicted-", dir=folder.parent))
        try:
            os.rename(folder, aside / "entry")
        except FileNotFoundError:
            return False
        finally:
            shutil.rmtree(aside, ignore_errors=True)
        return True


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
            _warn(warn, f"{kind} entry {key[:12]} in {self.location} is unusable: {problem}")
        return entry

    def fetch(self, kind: str, key: str, dest: Path, warn: Warn | None = None) -> Entry | None:
        from google.api_core import exceptions

        entry = self.lookup(kind, key, warn)
        if entry is None:
            return None
        _fresh_dir(dest)
        try:
            return self._fetch(entry, dest, warn)
        except exceptions.NotFound:
            # A forced build replaced the entry while we read it, removing the old files:
            # restore the new one (once; a vanished file of that one is damage).
            newer = self.lookup(kind, key, warn)
            if newer is None or newer.version == entry.version:
                self._vanished(entry, dest, warn)
                return None
            _empty(dest)
            try:
                return self._fetch(newer, dest, warn)
            except exceptions.NotFound:
                self._vanished(newer, dest, warn)
                return None

    def _vanished(self, entry: Entry, dest: Path, warn: Warn | None) -> None:
        _empty(dest)
        where = f"{entry.kind} entry {entry.key[:12]} in {self.location}"
        _warn(warn, f"{where} is unusable: a file vanished; evicted")
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
                _check(name, record, actual.size, actual.sha256)
        except exceptions.NotFound:
            raise
        except (Unusable, DataCorruption) as exc:
            _empty(dest)
            why = "a file is corrupt" if isinstance(exc, DataCorruption) else str(exc)
            _warn(warn, f"{kind} entry {key[:12]} in {self.location} is unusable: {why}; evicted")
            self.evict(entry)
            return None
        except (OSError, exceptions.GoogleAPIError) as exc:
            _empty(dest)
            _warn(warn, f"{kind} entry {key[:12]} could not be restored: {exc}")
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
                _warn(warn, f"replacing the unusable {kind} entry {key[:12]}: {problem}")
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


def make_gcs_client() -> Client:
    """The one place a Cloud Storage client is made: application default credentials and
    project, or the emulator named by STORAGE_EMULATOR_HOST (no credentials needed)."""
    from google.cloud import storage

    return storage.Client()


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

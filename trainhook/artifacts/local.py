"""`LocalStore`: the artifact store in a directory (TRAINHOOK_ARTIFACTS is a path)."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

from trainhook.artifacts.manifest import (
    CHUNK,
    MANIFEST,
    Entry,
    FileRecord,
    Unusable,
    Warn,
    check_file,
    check_name,
    empty_dir,
    fresh_dir,
    manifest_bytes,
    parse_manifest,
    source_files,
    warn_about,
)


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
        """The entry, None when absent; raises Unusable when something broken is there.

        An entry replaced while it is read (a forced publish moves the old one aside, then
        renames the new one in) is read again, never called broken: a publisher that took
        it for broken would move the new, complete entry aside."""
        for _ in range(3):
            try:
                return self._read_once(kind, key)
            except _Replaced:
                continue
        raise Unusable("it keeps changing while it is read")

    def _read_once(self, kind: str, key: str) -> Entry | None:
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
                if _replaced(manifest, info):
                    raise _Replaced from None
                raise Unusable(f"{name} is missing (partial entry)") from None
            if size != record.size:
                if _replaced(manifest, info):
                    raise _Replaced from None
                raise Unusable(f"{name} has {size} bytes, the manifest says {record.size}")
        version = f"{info.st_ino}:{info.st_mtime_ns}"
        return Entry(kind, key, files, meta, str(folder), version)

    def lookup(self, kind: str, key: str, warn: Warn | None = None) -> Entry | None:
        try:
            return self._read(kind, key)
        except Unusable as exc:
            warn_about(warn, f"{kind} entry {key[:12]} in {self.location} is unusable: {exc}")
            return None

    def fetch(self, kind: str, key: str, dest: Path, warn: Warn | None = None) -> Entry | None:
        entry = self.lookup(kind, key, warn)
        if entry is None:
            return None
        fresh_dir(dest)
        folder = Path(entry.location)
        try:
            for name, record in entry.files.items():
                with (folder / name).open("rb") as src, (dest / name).open("wb") as out:
                    writer = _HashingWriter(out)
                    shutil.copyfileobj(src, writer, CHUNK)
                check_file(name, record, writer.size, writer.digest.hexdigest())
        except Unusable as exc:
            empty_dir(dest)
            warn_about(
                warn, f"{kind} entry {key[:12]} in {self.location} is unusable: {exc}; evicted"
            )
            self.evict(entry)
            return None
        except OSError as exc:
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
                        warn_about(warn, f"replacing the unusable {kind} entry {key[:12]}: {exc}")
                        theirs = None
                        self._move_aside(final)
                    if theirs is not None:
                        return theirs, False
                    continue
                _fsync(final.parent)
                try:
                    entry = self._read(kind, key)
                except Unusable:
                    entry = None  # moved aside while being read
                if entry is not None and dict(entry.files) == records:
                    return entry, True
                # A forced publisher moved ours aside between the rename and the read: its
                # entry wins, and its own rename follows at once (staging is gone: ours
                # cannot be tried again).
                return self._await_replacement(kind, key, warn), False
            raise OSError(f"could not publish {kind} entry {key[:12]} in {self.location}")
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def _await_replacement(self, kind: str, key: str, warn: Warn | None) -> Entry:
        """The entry a forced publisher is putting in place of ours (moved aside, then
        renamed in: milliseconds apart)."""
        for _ in range(200):
            theirs = self.lookup(kind, key, warn)
            if theirs is not None:
                return theirs
            time.sleep(0.01)
        raise OSError(f"{kind} entry {key[:12]} in {self.location} vanished after publishing")

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


class _Replaced(Exception):
    """The entry being read was moved aside or replaced meanwhile."""


def _replaced(manifest: Path, read: os.stat_result) -> bool:
    """Whether `manifest` is no longer the file that was read (moved aside, replaced)."""
    try:
        now = manifest.stat()
    except OSError:
        return True
    return (now.st_dev, now.st_ino) != (read.st_dev, read.st_ino)

"""An entry's manifest: what an entry is, how its manifest is written and read, and the
checks every store makes on names, sizes and hashes."""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
SCHEMA = 1
KIND_RE = re.compile(r"[a-z][a-z0-9-]{0,31}")
KEY_RE = re.compile(r"[0-9a-f]{16,128}")
NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")
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


def warn_about(warn: Warn | None, message: str) -> None:
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


def check_file(name: str, record: FileRecord, size: int, sha256: str) -> None:
    if size != record.size:
        raise Unusable(f"{name} has {size} bytes, the manifest says {record.size} (partial?)")
    if sha256 != record.sha256:
        raise Unusable(f"{name} does not match its sha256 in the manifest (corrupt)")


def fresh_dir(dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    if any(dest.iterdir()):
        raise ValueError(f"{dest} is not empty")


def empty_dir(dest: Path) -> None:
    for path in dest.iterdir():
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)

"""Deterministic release bundles: the same inputs always give the same tar.gz bytes."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import stat
import tarfile
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import trainer
from worker.context import Bundle

MODEL_NAMES = ("model.joblib", "vectorizer.joblib", "metrics.json", "model_card.md")
MANIFEST = ".trainhook/bundle.json"
FIXED_MTIME = 0

# arcname -> a file or symlink on disk, or literal bytes
Entry = Path | bytes


def tree_entries(root: Path, prefix: str = "", skip: tuple[str, ...] = ()) -> dict[str, Path]:
    """Every file and symlink under `root` (not followed), keyed by archive name."""
    entries: dict[str, Path] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in skip]
        base = Path(dirpath)
        for name in [*filenames, *(d for d in dirnames if (base / d).is_symlink())]:
            rel = (base / name).relative_to(root).as_posix()
            entries[prefix + rel] = base / name
    return entries


def bundle_entries(source: Path, model_dir: Path, manifest: Mapping[str, Any]) -> dict[str, Entry]:
    """What a bundle holds: the checkout, the model files beside the app (where it loads them
    from), a copy of the `trainer` package (the pickled vectorizer may reference its
    classes) and a manifest. Later layers win over the checkout's files of the same name."""
    entries: dict[str, Entry] = dict(tree_entries(source))
    trainer_dir = Path(trainer.__file__).parent
    vendored = {
        name: path
        for name, path in tree_entries(trainer_dir, "trainer/", skip=("__pycache__",)).items()
        if name.endswith(".py")
    }
    entries = {k: v for k, v in entries.items() if not k.startswith("trainer/")}
    entries.update(vendored)
    for name in MODEL_NAMES:
        if (model_dir / name).is_file():
            entries[name] = model_dir / name
    entries[MANIFEST] = (json.dumps(dict(manifest), indent=2, sort_keys=True) + "\n").encode()
    return entries


def _tarinfo(name: str, entry: Entry) -> tuple[tarfile.TarInfo, bytes | None, Path | None]:
    info = tarfile.TarInfo(name)
    info.mtime, info.uid, info.gid, info.uname, info.gname = FIXED_MTIME, 0, 0, "", ""
    if isinstance(entry, bytes):
        info.size, info.mode = len(entry), 0o644
        return info, entry, None
    st = entry.lstat()
    if stat.S_ISLNK(st.st_mode):
        info.type, info.linkname, info.mode = tarfile.SYMTYPE, os.readlink(entry), 0o777
        return info, None, None
    info.size = st.st_size
    info.mode = 0o755 if st.st_mode & stat.S_IXUSR else 0o644
    return info, None, entry


def write_bundle(entries: Mapping[str, Entry], dest: Path, version: str) -> Bundle:
    """Write `entries` as a deterministic tar.gz at `dest` (sorted names, fixed mtimes,
    owners and modes, no gzip timestamp or file name), atomically. Returns its digest."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", dir=dest.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as raw:
            with (
                gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz,
                tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar,
            ):
                for name in sorted(entries):
                    info, data, path = _tarinfo(name, entries[name])
                    if data is not None:
                        tar.addfile(info, io.BytesIO(data))
                    elif path is not None:
                        with path.open("rb") as stream:
                            tar.addfile(info, stream)
                    else:
                        tar.addfile(info)
            raw.flush()
            os.fsync(raw.fileno())
        digest = file_digest(tmp)
        size = tmp.stat().st_size
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return Bundle(path=dest, version=version, digest=digest, size=size)


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()

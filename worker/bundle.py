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

import trainhook_runtime
from worker.context import Bundle
from worker.outcome import StageFailed

MODEL_NAMES = (
    "model.joblib",
    "vectorizer.joblib",
    "model_manifest.json",
    "metrics.json",
    "model_card.md",
)
MANIFEST = ".trainhook/bundle.json"
RUNTIME_DIR = "trainhook_runtime"
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


def runtime_entries() -> dict[str, Path]:
    """The `trainhook_runtime` package's sources, keyed `trainhook_runtime/<file>.py`."""
    root = Path(trainhook_runtime.__file__).parent
    entries = tree_entries(root, f"{RUNTIME_DIR}/", skip=("__pycache__",))
    return {name: path for name, path in entries.items() if name.endswith(".py")}


def bundle_entries(source: Path, model_dir: Path, manifest: Mapping[str, Any]) -> dict[str, Entry]:
    """What a bundle holds: the checkout, untouched; the model files beside the app (where it
    loads them from); the `trainhook_runtime` package (the classes the pickled vectorizer
    references, under a name no user's package has); and a manifest.

    Nothing of the checkout is removed or replaced: raises StageFailed, naming the paths,
    when the checkout already has a path the bundle adds (a file of the same name, a file
    inside a directory the bundle adds, or a file where the bundle needs a directory).
    """
    checkout: dict[str, Entry] = dict(tree_entries(source))
    added: dict[str, Entry] = dict(runtime_entries())
    for name in MODEL_NAMES:
        if (model_dir / name).is_file():
            added[name] = model_dir / name
    added[MANIFEST] = (json.dumps(dict(manifest), indent=2, sort_keys=True) + "\n").encode()
    clashes = _clashes(checkout, added)
    if clashes:
        shown = ", ".join(clashes[:5]) + (
            f" and {len(clashes) - 5} more" if len(clashes) > 5 else ""
        )
        raise StageFailed(
            f"the checkout already has {shown}, which the bundle would replace: trainhook "
            f"adds {RUNTIME_DIR}/, {MANIFEST} and the model files "
            f"({', '.join(MODEL_NAMES)}) at the top of the repository and never overwrites "
            "a file of yours; rename or remove those paths (or stop committing build outputs)"
        )
    return {**checkout, **added}


def _clashes(checkout: Mapping[str, Entry], added: Mapping[str, Entry]) -> list[str]:
    """Checkout paths that are, contain or lie inside a path the bundle adds."""
    added_dirs = {parent for name in added for parent in _parents(name)}
    found = set(checkout) & set(added)
    # A checkout file inside a directory the bundle adds (`trainhook_runtime/x.py`), or a
    # checkout file or symlink where the bundle needs a directory (`.trainhook`).
    found |= {name for name in checkout if set(_parents(name)) & added_dirs}
    found |= set(checkout) & added_dirs
    return sorted(found)


def _parents(name: str) -> list[str]:
    parts = name.split("/")[:-1]
    return ["/".join(parts[: i + 1]) for i in range(len(parts))]


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

"""The local registry and releases: push a bundle, unpack it, switch `current` atomically.

A bundle holds the repository's checkout, so its content is untrusted. It is unpacked by
our own code, not by `tarfile`'s extraction filter (which has known bypasses on the Python
versions this runs on, CVE-2025-4517 among them): only regular files, directories and
symlinks that resolve inside the release are accepted, and symlinks are made last, so no
file is ever written through one."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import stat
import tarfile
import tempfile
from pathlib import Path
from typing import Any

from trainhook.models import utcnow
from worker.bundle import file_digest
from worker.checkout import NAME_MAX, PATH_MAX, link_escapes
from worker.context import Bundle
from worker.stage import StageFailed

KEEP_RELEASES = 5


def _write_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as stream:
            stream.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class LocalRegistry:
    """`home/registry/<slug>/<version>.tar.gz` plus `<version>.json` (digest, sha, build)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def push(self, slug: str, bundle: Bundle, info: dict[str, Any]) -> tuple[Path, str]:
        """Store `bundle`; returns (its registry path, what happened). Idempotent: the same
        digest already stored is left alone and keeps its original `created`."""
        folder = self.root / slug
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / f"{bundle.version}.tar.gz"
        manifest_path = folder / f"{bundle.version}.json"
        old = self.manifest(slug, bundle.version)
        same = old is not None and old.get("digest") == bundle.digest and target.is_file()
        if same and file_digest(target) == bundle.digest:
            return target, "already in registry"
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=folder)
        os.close(fd)
        try:
            shutil.copyfile(bundle.path, tmp)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        manifest = {
            **info,
            "version": bundle.version,
            "digest": bundle.digest,
            "size": bundle.size,
            "created": (old or {}).get("created") or utcnow().isoformat(),
        }
        _write_atomic(
            manifest_path, (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()
        )
        return target, "replaced" if old else "pushed"

    def manifest(self, slug: str, version: str) -> dict[str, Any] | None:
        try:
            value = json.loads((self.root / slug / f"{version}.json").read_text("utf-8"))
        except (OSError, ValueError):
            return None
        return value if isinstance(value, dict) else None


class Releases:
    """`home/releases/<slug>/<version>/` unpacked bundles and the `current` symlink."""

    def __init__(self, root: Path, slug: str) -> None:
        self.folder = root / slug
        self.current = self.folder / "current"

    def current_version(self) -> str | None:
        try:
            return os.readlink(self.current)
        except OSError:
            return None

    def current_metrics(self) -> dict[str, Any] | None:
        try:
            value = json.loads((self.current / "metrics.json").read_text("utf-8"))
        except (OSError, ValueError):
            return None
        return value if isinstance(value, dict) else None

    def unpack(self, archive: Path, version: str, digest: str) -> Path:
        """Extract `archive` into `<version>/` (via a temp dir and a rename) and return it.
        An existing directory of the same digest is reused. One of another digest is
        replaced, unless it is serving: then the new one goes to `<version>.<digest12>`,
        so `current` never changes under a running app before its health check."""
        self.folder.mkdir(parents=True, exist_ok=True)
        target = self.folder / version
        stale = target.is_dir() and _unpacked_digest(target) != digest
        if stale and self.current_version() == version:
            target = self.folder / f"{version}.{digest[:12]}"
        if target.is_dir() and _unpacked_digest(target) == digest:
            return target
        tmp = Path(tempfile.mkdtemp(prefix=f".{version}.", dir=self.folder))
        tmp.chmod(0o755)  # readable by the account that serves it, like any unpacked release
        try:
            unpack_bundle(archive, tmp)
            (tmp / ".trainhook").mkdir(exist_ok=True)
            (tmp / ".trainhook" / "digest").write_text(digest + "\n")
            if target.exists():
                shutil.rmtree(target)
            os.rename(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return target

    def switch(self, version: str) -> str | None:
        """Point `current` at `version` atomically (new symlink + rename over the old one);
        returns the previous version."""
        previous = self.current_version()
        link = self.folder / f".current-{secrets.token_hex(4)}"
        os.symlink(version, link)
        try:
            os.replace(link, self.current)
        except BaseException:
            link.unlink(missing_ok=True)
            raise
        return previous

    def prune(self, keep: int = KEEP_RELEASES) -> list[str]:
        """Remove the oldest releases beyond `keep`, never the current one."""
        current = self.current_version()
        versions = sorted(
            (
                p
                for p in self.folder.iterdir()
                if p.is_dir() and not p.is_symlink() and not p.name.startswith(".")
            ),
            key=lambda p: p.stat().st_mtime,
            reverse=True,
        )
        removed = []
        for path in versions[keep:]:
            if path.name != current:
                shutil.rmtree(path, ignore_errors=True)
                removed.append(path.name)
        return removed


def _refuse(name: str, why: str) -> StageFailed:
    return StageFailed(f"release bundle refused {name!r}: {why}")


def _member_name(member: tarfile.TarInfo, room: int) -> str:
    name = member.name
    parts = name.split("/")
    if not name or name.startswith("/") or "\0" in name:
        raise _refuse(name, "not a relative path")
    if any(part in ("", ".", "..") for part in parts):
        raise _refuse(name, "empty, '.' or '..' path component")
    if any(len(os.fsencode(part)) > NAME_MAX for part in parts) or len(os.fsencode(name)) >= room:
        raise _refuse(name, "name or path too long for the file system")
    return name


def unpack_bundle(archive: Path, dest: Path) -> int:
    """Unpack the tar.gz `archive` into the empty directory `dest`; returns the number of
    entries. Raises StageFailed, naming the entry, for anything but a regular file, a
    directory or a symlink; a name that is absolute, has `..`, is too long, is given twice
    or lies below a non-directory; a symlink that resolves outside `dest`.

    Files and directories are written first with O_EXCL|O_NOFOLLOW while no symlink exists
    in `dest`; symlinks are made after them, each then resolved on disk. This does not use
    tarfile's extraction filters at all, so their bypasses do not matter here."""
    room = PATH_MAX - len(os.fsencode(dest)) - 1
    kinds: dict[str, str] = {}  # name -> "dir" | "file" | "link"; parents count as dirs
    links: list[tarfile.TarInfo] = []
    with tarfile.open(archive, "r:gz") as tar:
        for member in tar:
            name = _member_name(member, room)
            if member.isdir():
                kind = "dir"
            elif member.isreg():
                kind = "file"
            elif member.issym():
                kind = "link"
            else:
                raise _refuse(name, "only files, directories and symlinks may be released")
            parts = name.split("/")
            for depth in range(1, len(parts)):
                if kinds.setdefault("/".join(parts[:depth]), "dir") != "dir":
                    raise _refuse(name, "is below an entry that is not a directory")
            if name in kinds and not (kind == "dir" == kinds[name]):
                raise _refuse(name, "given twice")
            kinds[name] = kind
            target = dest / name
            if kind == "dir":
                target.mkdir(mode=0o755, parents=True, exist_ok=True)
            elif kind == "file":
                target.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
                _write_member(tar, member, target)
            else:
                links.append(member)
    for member in links:
        target = dest / member.name
        target.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        os.symlink(member.linkname, target)
    # Checked once all exist: one link may lead out only through another made after it.
    for member in links:
        if link_escapes(dest, member.name):
            raise _refuse(member.name, f"a symlink to {member.linkname!r} leads outside")
    return len(kinds)


def _write_member(tar: tarfile.TarFile, member: tarfile.TarInfo, target: Path) -> None:
    source = tar.extractfile(member)
    assert source is not None  # a regular file always has a stream
    mode = 0o755 if member.mode & stat.S_IXUSR else 0o644
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    with os.fdopen(fd, "wb") as out, source:
        shutil.copyfileobj(source, out, 1 << 20)
    os.utime(target, (member.mtime, member.mtime), follow_symlinks=False)


def _unpacked_digest(path: Path) -> str | None:
    with contextlib.suppress(OSError):
        return (path / ".trainhook" / "digest").read_text().strip()
    return None

"""Virtual environments kept by key in one directory: `<root>/<key>` with `<root>/<key>.lock`.

A venv is created once per key, in place (venvs are not relocatable), while its lock is held
exclusively; the `.complete` marker inside it is written last, so a directory without the
marker is a build that failed or died and is removed and rebuilt. A build that uses a venv
holds its lock shared for as long as it runs, so pruning (which takes the lock exclusively,
without waiting) never removes a venv in use. Locks are `fcntl.flock` on the lock file, good
between threads and processes on one machine (the state directory is not shared by hosts).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

MARKER = ".complete"


@dataclass(frozen=True)
class Lease:
    """A venv ready to use: `created` (and in `seconds`) by this call, or reused."""

    path: Path
    key: str
    created: bool
    seconds: float = 0.0

    @property
    def bin_dir(self) -> Path:
        return self.path / "bin"


def _lock(path: Path, operation: int) -> int | None:
    """An open descriptor of `path` holding `operation` (LOCK_SH or LOCK_EX, maybe | LOCK_NB);
    None when LOCK_NB was asked and the lock is busy. The descriptor is not inherited by
    child processes (a test's stray grandchild must not keep a venv locked)."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, operation)
        except BlockingIOError:
            os.close(fd)
            return None
        except BaseException:
            os.close(fd)
            raise
        if _still_linked(path, fd):
            return fd
        # A prune unlinked this lock file while we waited: lock the one now at `path`.
        os.close(fd)


def _still_linked(path: Path, fd: int) -> bool:
    try:
        return os.stat(path).st_ino == os.fstat(fd).st_ino
    except FileNotFoundError:
        return False


def is_complete(venv: Path) -> bool:
    """True when `venv` was built to the end and its interpreter still resolves (a venv
    whose base Python was removed, say by an upgraded image, counts as incomplete)."""
    return (venv / MARKER).is_file() and (venv / "bin" / "python").exists()


class VenvCache:
    """The venvs under `root`, at most `keep` complete ones left after each use (the most
    recently used; a venv in use is never removed, so there may briefly be more)."""

    def __init__(self, root: Path, keep: int = 5) -> None:
        if keep < 1:
            raise ValueError("keep at least 1 venv")
        self.root = root
        self.keep = keep

    def path(self, key: str) -> Path:
        return self.root / key

    @contextlib.contextmanager
    def use(
        self, key: str, create: Callable[[Path], None], *, force: bool = False
    ) -> Iterator[Lease]:
        """Yield the venv for `key`, held shared until the block ends. When it is missing or
        incomplete (or `force`), `create(path)` builds it in place under the exclusive lock;
        if `create` raises, the directory is removed and the exception propagates (the next
        use retries). Idempotent: concurrent callers with one key create it once (unless
        forced). Prunes the other venvs down to `keep` before yielding."""
        if not key or "/" in key or key.startswith("."):
            raise ValueError(f"bad venv key {key!r}")
        self.root.mkdir(parents=True, exist_ok=True)
        lease, fd = self._acquire(key, create, force)
        try:
            self.prune()
            yield lease
        finally:
            os.close(fd)  # releases the shared lock

    def _acquire(self, key: str, create: Callable[[Path], None], force: bool) -> tuple[Lease, int]:
        target, lock = self.path(key), self.root / f"{key}.lock"
        rebuild = force
        while True:
            if not rebuild:
                fd = _lock(lock, fcntl.LOCK_SH)
                assert fd is not None
                if is_complete(target):
                    return self._touch(Lease(target, key, created=False)), fd
                os.close(fd)
            fd = _lock(lock, fcntl.LOCK_EX)
            assert fd is not None
            try:
                if not rebuild and is_complete(target):
                    lease = Lease(target, key, created=False)  # built while we waited
                else:
                    lease = Lease(target, key, created=True, seconds=self._build(target, create))
                # Not atomic (flock drops, then takes): a prune may slip in between, so
                # check that the lock file and the venv are still there once shared.
                fcntl.flock(fd, fcntl.LOCK_SH)
            except BaseException:
                os.close(fd)
                raise
            if _still_linked(lock, fd) and is_complete(target):
                return self._touch(lease), fd
            os.close(fd)
            rebuild = False

    def _build(self, target: Path, create: Callable[[Path], None]) -> float:
        """Create `target` from nothing, marker last; on any failure remove it. Returns the
        seconds it took. The caller holds the exclusive lock."""
        if target.exists() or target.is_symlink():
            _remove(target)
        started = time.monotonic()
        try:
            create(target)
            if not (target / "bin" / "python").exists():
                raise RuntimeError(f"{target} has no bin/python after it was created")
            (target / MARKER).touch()
        except BaseException:
            _remove(target)
            raise
        return time.monotonic() - started

    @staticmethod
    def _touch(lease: Lease) -> Lease:
        # The marker's mtime is the venv's last use: pruning keeps the most recent. The
        # precise clock: the file system's own is coarse (uses a few ms apart would tie).
        now = time.time_ns()
        os.utime(lease.path / MARKER, ns=(now, now))
        return lease

    def prune(self) -> list[str]:
        """Remove venvs beyond the `keep` most recently used, and directories left by builds
        that died; skip any whose lock is held (in use or being built). Returns the keys
        removed. Idempotent; safe to run from several workers at once."""
        ranked: list[tuple[int, str]] = []
        for child in self.root.iterdir():
            if child.name.endswith(".lock") or not child.is_dir() or child.is_symlink():
                continue
            try:
                used = (child / MARKER).stat().st_mtime_ns
            except FileNotFoundError:
                used = -1  # never completed: the first to go, once its builder is gone
            ranked.append((used, child.name))
        ranked.sort(reverse=True)
        kept = 0
        removed: list[str] = []
        for used, key in ranked:
            if used >= 0 and kept < self.keep:
                kept += 1
                continue
            if self._remove_unused(key):
                removed.append(key)
        # Lock files whose venv is gone (a failed first build): nothing to keep them for.
        for lock in self.root.glob("*.lock"):
            if not self.path(lock.name.removesuffix(".lock")).exists():
                self._remove_unused(lock.name.removesuffix(".lock"))
        return removed

    def _remove_unused(self, key: str) -> bool:
        lock = self.root / f"{key}.lock"
        fd = _lock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        if fd is None:
            return False
        try:
            _remove(self.path(key))
            # Unlinked while held: a waiter on this file notices and locks the new one.
            lock.unlink(missing_ok=True)
        finally:
            os.close(fd)
        log.info("removed test venv %s", key[:12])
        return True


def _remove(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.exists():
        shutil.rmtree(path)

"""Per-build work directories, locked while in use so a sibling's cleanup never removes them."""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import secrets
import shutil
from pathlib import Path

log = logging.getLogger(__name__)


class Workspace:
    """A fresh directory `root/<label>-<random>` held under an exclusive `flock` on the
    sibling file `<name>.lock` until `release()`.

    The lock is taken before the directory exists, so a cleaner (in this or another worker
    process on the same machine) either sees no directory or cannot take the lock.
    """

    def __init__(self, root: Path, label: str) -> None:
        root.mkdir(parents=True, exist_ok=True)
        name = f"{label}-{secrets.token_hex(4)}"
        self.root = root
        self.path = root / name
        self._lock: int | None = os.open(root / f"{name}.lock", os.O_CREAT | os.O_RDWR, 0o600)
        fcntl.flock(self._lock, fcntl.LOCK_EX)
        self.path.mkdir()

    def release(self) -> None:
        """Unlock the directory (it stays on disk until a later cleanup). Idempotent."""
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None

    def clean_siblings(self) -> int:
        """Remove the other work directories under `root` that no process holds; returns how
        many were removed. The current one is always kept."""
        removed = 0
        for entry in sorted(self.root.iterdir()):
            if entry == self.path or entry.suffix == ".lock":
                continue
            if _remove_if_unlocked(entry, self.root / f"{entry.name}.lock"):
                removed += 1
        for lock in self.root.glob("*.lock"):
            if not lock.with_suffix("").exists() and lock != self.path.with_suffix(".lock"):
                _remove_if_unlocked(None, lock)
        return removed


def _remove_if_unlocked(directory: Path | None, lock: Path) -> bool:
    try:
        fd = os.open(lock, os.O_CREAT | os.O_RDWR, 0o600)
    except OSError:
        return False
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False  # in use by a running build
        if directory is not None:
            if directory.is_dir() and not directory.is_symlink():
                shutil.rmtree(directory, ignore_errors=True)
            else:
                directory.unlink(missing_ok=True)
        with contextlib.suppress(FileNotFoundError):
            lock.unlink()
        return directory is not None
    finally:
        os.close(fd)

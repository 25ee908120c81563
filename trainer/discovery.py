"""Finding the training data file inside a repository checkout, safely.

Candidates are paths relative to a root directory; the first that exists wins. Paths that
could leave the root (absolute paths, `..`, symlinks resolving outside) are rejected with a
`DataError` before anything is read, whether or not they exist.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath

from trainer.data import DataError

DEFAULT_CANDIDATES: tuple[str, ...] = (
    "data/cleaned_training_sample.csv",
    "data/prod.csv",
    "data/train.csv",
)


@dataclass(frozen=True)
class Discovery:
    """Outcome of discovery: the file found (None: nothing found) and what was tried."""

    root: Path
    path: Path | None
    candidate: str | None
    tried: tuple[str, ...]


def safe_candidate(root: Path, candidate: str) -> Path:
    """Return `root / candidate` once it is proven to stay inside `root`.

    Raises DataError for an empty, absolute or `..`-containing candidate, or one that
    resolves (through symlinks) outside the root.
    """
    if not candidate or not candidate.strip():
        raise DataError(candidate, "empty data path")
    if "\x00" in candidate:
        raise DataError(repr(candidate), "data path contains a NUL byte")
    posix, windows = PurePosixPath(candidate), PureWindowsPath(candidate)
    if posix.is_absolute() or windows.is_absolute() or windows.drive:
        raise DataError(candidate, "absolute data paths are not allowed (use a path in the repo)")
    if ".." in posix.parts or ".." in windows.parts:
        raise DataError(candidate, "data paths may not contain '..'")
    real_root = root.resolve()
    full = root / candidate
    resolved = full.resolve()
    if not resolved.is_relative_to(real_root):
        raise DataError(full, f"resolves outside the data root {root} (through a symlink)")
    return full


def discover(root: str | Path, candidates: Sequence[str] = DEFAULT_CANDIDATES) -> Discovery:
    """Return the first candidate under `root` that exists (`path` None if none does).

    Every candidate is validated first, so a bad configuration fails even when an
    earlier candidate exists. Raises DataError for an unusable root, an unsafe candidate,
    or a candidate that exists but is not a regular file.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(root, "data root is not a directory")
    if not candidates:
        raise DataError(root, "no data candidates configured")
    checked = [(c, safe_candidate(root, c)) for c in candidates]
    for candidate, full in checked:
        if full.exists():
            if not full.is_file():
                raise DataError(full, "exists but is not a regular file")
            return Discovery(root, full, candidate, tuple(candidates))
    return Discovery(root, None, None, tuple(candidates))

"""The artifact set and how it reaches the output directory: all files or none.

Files are written into a staging directory beside the output directory, flushed to disk, and
the staging directory is then renamed onto the output directory (an existing set is swapped
out first). Readers see the old complete set or the new complete set, never a mix.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Any

from trainhook_runtime.loading import MANIFEST, MODEL, VECTORIZER

METRICS = "metrics.json"
MODEL_CARD = "model_card.md"
FALLBACK_SAMPLE = "fallback_sample.csv"
ARTIFACT_NAMES = frozenset({MODEL, VECTORIZER, MANIFEST, METRICS, MODEL_CARD, FALLBACK_SAMPLE})


class OutputError(Exception):
    """The output directory cannot receive the artifacts."""


def check_output_dir(out_dir: Path) -> None:
    """Fail early if `out_dir` exists but is not a directory holding only trainer artifacts.

    Raises OutputError. Refusing foreign files prevents swapping away a directory that
    holds anything else (for example `--out .`).
    """
    if not out_dir.exists():
        return
    if not out_dir.is_dir():
        raise OutputError(f"output path {out_dir} exists and is not a directory")
    foreign = sorted(p.name for p in out_dir.iterdir() if p.name not in ARTIFACT_NAMES)
    if foreign:
        shown = ", ".join(foreign[:5]) + (" ..." if len(foreign) > 5 else "")
        raise OutputError(
            f"output directory {out_dir} holds files that are not trainer artifacts ({shown}); "
            "use a new or empty directory"
        )


def make_staging(out_dir: Path) -> Path:
    """Create and return a private staging directory beside `out_dir`."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))


def write_artifacts(
    staging: Path, model: Any, vectorizer: Any, metrics: dict, card: str, manifest: dict
) -> None:
    """Write the five artifacts into `staging` and flush them to disk."""
    import joblib

    joblib.dump(model, staging / MODEL)
    joblib.dump(vectorizer, staging / VECTORIZER)
    (staging / MANIFEST).write_text(
        json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8"
    )
    (staging / METRICS).write_text(
        json.dumps(metrics, indent=2, sort_keys=True) + "\n", encoding="utf-8"
    )
    (staging / MODEL_CARD).write_text(card, encoding="utf-8")
    for path in staging.iterdir():
        _fsync(path)
    _fsync(staging)


def commit(staging: Path, out_dir: Path) -> None:
    """Move the staged set into place as `out_dir`, atomically; removes `staging`.

    Raises OutputError if `out_dir` holds foreign files.
    """
    for _ in range(5):
        check_output_dir(out_dir)
        try:
            # rename(2) replaces a missing or empty directory in one step.
            os.rename(staging, out_dir)
            break
        except OSError as exc:
            if not out_dir.is_dir():
                raise OutputError(f"cannot move the artifacts into {out_dir}: {exc}") from exc
        # A previous set: move it aside, move ours in, then delete the old one. Another
        # trainer may win the race in between; then we retry against its set.
        old = out_dir.with_name(f".{out_dir.name}.old-{uuid.uuid4().hex[:8]}")
        try:
            os.rename(out_dir, old)
        except FileNotFoundError:
            continue
        try:
            os.rename(staging, out_dir)
        except OSError:
            try:
                os.rename(old, out_dir)  # put the previous set back if the place is free
            except OSError:
                shutil.rmtree(old, ignore_errors=True)
            continue
        shutil.rmtree(old, ignore_errors=True)
        break
    else:
        raise OutputError(f"could not move the artifacts into {out_dir}: it keeps changing")
    _fsync(out_dir.parent)


def discard(staging: Path) -> None:
    """Remove a staging directory after a failure (best effort)."""
    shutil.rmtree(staging, ignore_errors=True)


def _fsync(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems cannot fsync directories; the rename is still atomic
    finally:
        os.close(fd)

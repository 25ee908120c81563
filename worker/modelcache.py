"""The local model cache: one directory per model key, published by atomic rename."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MODEL_FILES = ("model.joblib", "vectorizer.joblib", "metrics.json")
META_FILE = "meta.json"
KEY_RE = re.compile(r"[0-9a-f]{16,128}")


@dataclass(frozen=True)
class CachedModel:
    key: str
    path: Path
    meta: dict[str, Any]

    @property
    def build_id(self) -> int | None:
        value = self.meta.get("build_id")
        return value if isinstance(value, int) else None


class ModelCache:
    """`root/<key>/` holds model.joblib, vectorizer.joblib, metrics.json and a meta.json
    naming the build that produced it. An entry is only ever seen complete: it is written
    into a temp dir beside it and renamed into place; the first publisher wins."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, key: str) -> Path:
        if not KEY_RE.fullmatch(key):
            raise ValueError(f"{key!r} is not a model key")
        return self.root / key

    def lookup(self, key: str) -> CachedModel | None:
        """The complete entry for `key`, or None (absent, or missing a file)."""
        path = self.path(key)
        if not all((path / name).is_file() for name in (*MODEL_FILES, META_FILE)):
            return None
        try:
            meta = json.loads((path / META_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return CachedModel(key, path, meta) if isinstance(meta, dict) else None

    def staging(self, key: str) -> Path:
        """A fresh scratch dir on the same file system as the entries, so that a directory
        made inside it can be published by an atomic rename. The caller removes it."""
        self.root.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix=f".tmp-{self.path(key).name[:16]}-", dir=self.root))
        scratch.chmod(0o755)  # it may become the entry itself
        return scratch

    def publish(self, key: str, staged: Path, meta: dict[str, Any]) -> tuple[CachedModel, bool]:
        """Write meta.json into `staged` and move it to the entry for `key`. Returns the entry
        and True, or (the entry another worker published first, False) when it lost the race;
        `staged` is gone either way. Raises ValueError when `staged` lacks a model file."""
        missing = [name for name in MODEL_FILES if not (staged / name).is_file()]
        if missing:
            shutil.rmtree(staged, ignore_errors=True)
            raise ValueError(f"the trainer did not write {', '.join(missing)}")
        (staged / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
        final = self.path(key)
        for _ in range(3):
            try:
                os.rename(staged, final)
            except OSError:
                theirs = self.lookup(key)
                if theirs is not None:
                    shutil.rmtree(staged, ignore_errors=True)
                    return theirs, False
                # A broken leftover (say, written by hand): move it aside, then retry.
                aside = Path(tempfile.mkdtemp(prefix=".broken-", dir=self.root))
                with contextlib.suppress(FileNotFoundError):
                    os.rename(final, aside / "entry")
                shutil.rmtree(aside, ignore_errors=True)
                continue
            entry = self.lookup(key)
            assert entry is not None
            return entry, True
        raise OSError(f"could not publish model cache entry {final.name}")

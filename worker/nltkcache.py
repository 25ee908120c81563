"""The nltk cache level: the NLTK data directory training reads, kept under
`$TRAINHOOK_HOME/cache/nltk/<key>`, restored from the artifact store (a tarball) when this
machine has none, downloaded only when neither has it (and then stored). The key holds the
cache scope, so each repository (or cache group) has its own.

A forced build downloads afresh, replaces the stored entry and this machine's directory,
and trains with what it downloaded, never with another build's copy."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import tarfile
import tempfile
from pathlib import Path

from trainer.nltkdata import package_path
from worker.commands import child_env, run_command
from worker.context import BuildContext
from worker.testcommand import secret_names

TARBALL = "nltk_data.tar.gz"
DOWNLOAD_TIMEOUT = 600.0
# Runs in a child: importing nltk takes seconds and its downloader holds memory.
DOWNLOAD_SCRIPT = (
    "import json, sys\n"
    "from trainer.nltkdata import ensure_nltk_data\n"
    "status = ensure_nltk_data(json.loads(sys.argv[1]), sys.argv[2], sys.argv[3] or None)\n"
    "print(json.dumps(status.to_dict()))\n"
)


def complete(directory: Path, packages: tuple[str, ...]) -> bool:
    return directory.is_dir() and all(package_path(p, directory) for p in packages)


def make_tarball(directory: Path, dest: Path) -> Path:
    with tarfile.open(dest, "w:gz", compresslevel=6) as tar:
        for path in sorted(directory.rglob("*")):
            tar.add(path, arcname=path.relative_to(directory).as_posix(), recursive=False)
    return dest


def _install(staged: Path, final: Path) -> Path:
    """Move a complete directory into place; if another worker got there first, use theirs."""
    final.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.rename(staged, final)
    except OSError:
        shutil.rmtree(staged, ignore_errors=True)
    return final


def _replace(ctx: BuildContext, staged: Path, final: Path) -> Path:
    """Put a forced build's download in place of this machine's directory and return what
    the build trains with: always its own download. The old directory is moved aside and
    removed when the build ends (a training that started with it may still read it)."""
    final.parent.mkdir(parents=True, exist_ok=True)
    old = Path(tempfile.mkdtemp(prefix=".replaced-", dir=final.parent))
    ctx.cleanup.callback(shutil.rmtree, old, True)
    with contextlib.suppress(FileNotFoundError):
        os.rename(final, old / "data")
    try:
        os.rename(staged, final)
    except OSError:
        # Another build installed one in between: ours is still the one this build uses.
        ctx.cleanup.callback(shutil.rmtree, staged, True)
        return staged
    return final


def prepare_nltk(ctx: BuildContext) -> Path | None:
    """The NLTK data directory for this build's training (None when it reads none), with the
    nltk level's final result set on `ctx.cache.nltk`."""
    decision = ctx.cache
    assert decision is not None
    level, packages = decision.nltk, decision.nltk_packages
    if not packages:
        return None
    root = ctx.settings.home / "cache" / "nltk"
    final = root / level.key
    force = ctx.build.force
    if not force and complete(final, packages):
        level.result = "hit"
        level.why = "data directory already on this machine"
        return final
    root.mkdir(parents=True, exist_ok=True)
    warnings: list[str] = []
    if not force:
        with tempfile.TemporaryDirectory(prefix=".restore-", dir=root) as scratch:
            entry = decision.store.fetch(
                "nltk", level.key, Path(scratch) / "entry", warnings.append
            )
            if entry is not None:
                staged = Path(scratch) / "data"
                try:
                    with tarfile.open(Path(scratch) / "entry" / TARBALL) as tar:
                        tar.extractall(staged, filter="data")
                except (OSError, tarfile.TarError, KeyError) as exc:
                    warnings.append(f"stored NLTK tarball unusable: {exc}")
                else:
                    if complete(staged, packages):
                        level.result, level.entry = "hit", entry
                        level.why = f"restored from the store (stored by build #{entry.build_id})"
                        return _install(staged, final)
                    warnings.append("stored NLTK tarball lacks " + ", ".join(packages))
    for warning in warnings:
        ctx.log("train", f"warning: {warning}\n")
    return _download(ctx, root, final, packages, warnings)


def _download(
    ctx: BuildContext, root: Path, final: Path, packages: tuple[str, ...], warnings: list[str]
) -> Path:
    decision = ctx.cache
    assert decision is not None
    level = decision.nltk
    staged = Path(tempfile.mkdtemp(prefix=".download-", dir=root))
    argv = [sys.executable, "-P", "-c", DOWNLOAD_SCRIPT, json.dumps(list(packages)), str(staged)]
    argv.append(ctx.settings.nltk_index or "")
    ctx.log("train", f"downloading NLTK data: {', '.join(packages)}\n")
    result = run_command(
        argv,
        cwd=root,
        env=child_env(secret_names(ctx)),
        timeout=DOWNLOAD_TIMEOUT,
        on_output=lambda text: ctx.log("train", text),
    )
    level.result = "miss"
    why = "forced rebuild" if ctx.build.force else (warnings[0] if warnings else "not stored yet")
    if not result.ok or not complete(staged, packages):
        # Training goes on; the trainer reports the missing packages and its fallbacks.
        level.why = f"{why}; download failed, training uses fallbacks"
        ctx.cleanup.callback(shutil.rmtree, staged, True)
        return staged
    with tempfile.TemporaryDirectory(prefix=".tarball-", dir=root) as scratch:
        make_tarball(staged, Path(scratch) / TARBALL)
        meta = {"build_id": ctx.build.id, "packages": list(packages), "repo": ctx.repo.name}
        try:
            level.entry, _ = decision.store.publish(
                "nltk", level.key, Path(scratch), meta, replace=ctx.build.force
            )
            stored = " and stored"
        except Exception as exc:  # storing is best effort: training goes on
            ctx.log("train", f"warning: NLTK data not stored: {exc}\n")
            stored = " (not stored: see log)"
    level.why = f"{why}; downloaded " + ", ".join(packages) + stored
    if ctx.build.force:
        return _replace(ctx, staged, final)
    return _install(staged, final)

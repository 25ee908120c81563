"""The container engine the container builder's tests drive for real: podman (with runc), the
distribution registry, and a Python base image made offline by scripts/system-deps.sh."""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
from pathlib import Path

from tests.support.required import unavailable
from worker.container.engine import Engine, answers, engine_named
from worker.container.registry import BINARIES

BASE_IMAGE = "localhost/python-base:3.11"


def base_tar() -> Path:
    """Where scripts/system-deps.sh keeps the base image's root file system (a tar)."""
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "trainhook" / "python-base.tar"


@functools.cache
def _problem() -> str | None:
    if shutil.which("podman") is None or shutil.which("runc") is None:
        return "podman and runc are not installed (scripts/system-deps.sh)"
    if not any(shutil.which(b) for b in BINARIES):
        return "no distribution registry binary (docker-registry) installed"
    if not answers(engine_named("podman")):
        return "`podman info` fails on this machine"
    engine = engine_named("podman")
    present = subprocess.run(
        engine.cmd("image", "exists", BASE_IMAGE), capture_output=True, check=False
    )
    if present.returncode != 0:
        if not base_tar().is_file():
            return f"no base image: {base_tar()} is missing (scripts/system-deps.sh makes it)"
        made = subprocess.run(
            engine.cmd("import", "--change", 'CMD ["python3"]', str(base_tar()), BASE_IMAGE),
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        if made.returncode != 0:
            return f"importing the base image failed: {made.stderr.strip()[-300:]}"
    return None


def need_podman() -> Engine:
    """podman with the base image imported; skips loudly (fails under CI) without them."""
    problem = _problem()
    if problem is not None:
        unavailable("CONTAINERS", f"containers cannot run here: {problem}")
    return engine_named("podman")


def remove_containers(engine: Engine, label: str) -> None:
    """Remove every container with `label` (KEY=VALUE), running or not."""
    found = subprocess.run(
        engine.cmd("ps", "-aq", "--filter", f"label={label}"),
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    ids = found.stdout.split()
    if ids:
        subprocess.run(engine.cmd("rm", "-f", *ids), capture_output=True, check=False)


def remove_images(engine: Engine, name: str) -> None:
    """Remove every image whose reference holds `name` (a name unique to one test: other
    tests building at the same time keep theirs), tagged locally or in a registry."""
    found = subprocess.run(
        engine.cmd("images", "-q", "--filter", f"reference=*{name}*"),
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    ids = sorted(set(found.stdout.split()))
    if ids:
        subprocess.run(engine.cmd("rmi", "-f", *ids), capture_output=True, check=False)

"""The container engines the container builder's tests drive for real: podman (with runc), a
docker daemon of the test session's own, the distribution registry, and a Python base image
made offline by scripts/system-deps.sh."""

from __future__ import annotations

import contextlib
import functools
import os
import secrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
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
    made = _with_base_image(engine_named("podman"))
    return made if isinstance(made, str) else None


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
        # podman's `rm -f` first waits out the stop timeout (10 s) for a pid 1 that ignores
        # SIGTERM, as the release code knows (`--time 0` there too); docker kills at once.
        wait = ("--time", "0") if engine.name == "podman" else ()
        subprocess.run(engine.cmd("rm", "-f", *wait, *ids), capture_output=True, check=False)


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


# docker -------------------------------------------------------------------------------------

DOCKERD_START = 20.0  # seconds; it answers in under 1 s on a machine where it works


def dockerd_args(root: Path, bridge: str) -> list[str]:
    """A dockerd that collides with no other: its own data root, exec root (and so its own
    containerd), socket and bridge. No iptables rules: a published loopback port is served by
    docker's userland proxy, and nothing in the tests needs the container to reach out."""
    return [
        "dockerd", "--data-root", str(root / "data"), "--exec-root", str(root / "exec"),
        "--host", f"unix://{root / 'docker.sock'}", "--pidfile", str(root / "docker.pid"),
        "--storage-driver", "overlay2", "--iptables=false", "--ip-masq=false",
        "--bridge", bridge, "--containerd-namespace", "trainhook-test",
        "--containerd-plugins-namespace", "trainhook-test-plugins",
    ]  # fmt: skip


def _docker_problem() -> str | None:
    for binary in ("docker", "dockerd", "ip"):
        if shutil.which(binary) is None:
            return f"`{binary}` is not installed (scripts/system-deps.sh installs docker.io)"
    if not any(shutil.which(b) for b in BINARIES):
        return "no distribution registry binary (docker-registry) installed"
    if os.geteuid() != 0:
        return "dockerd needs root here, and no docker daemon answers `docker info`"
    if not base_tar().is_file():
        return f"no base image: {base_tar()} is missing (scripts/system-deps.sh makes it)"
    return None


def _ip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=False)


@contextlib.contextmanager
def own_dockerd() -> Iterator[Engine | str]:
    """A docker daemon for the test session with the base image loaded: the engine (its CLI
    pointed at the daemon's socket), or why there is none. The daemon, its bridge and its
    files are removed afterwards."""
    problem = _docker_problem()
    if problem is not None:
        # Not one of our own: a daemon already answering (docker.service) will do.
        system = engine_named("docker")
        if shutil.which("docker") is None or not answers(system):
            yield problem
            return
        yield _with_base_image(system)
        return
    # Short paths: a unix socket path holds at most 107 bytes.
    root = Path(tempfile.mkdtemp(prefix="trainhook-dockerd-"))
    bridge = f"thd-{secrets.token_hex(3)}"
    process: subprocess.Popen[bytes] | None = None
    engine = Engine("docker", ("docker", "--host", f"unix://{root / 'docker.sock'}"))
    try:
        subnet = f"10.{secrets.choice(range(200, 250))}.{secrets.randbelow(256)}"
        for step in (
            ("link", "add", bridge, "type", "bridge"),
            ("addr", "add", f"{subnet}.1/24", "dev", bridge),
            ("link", "set", bridge, "up"),
        ):
            made = _ip(*step)
            if made.returncode != 0:
                yield f"making the bridge {bridge} failed: {made.stderr.strip()[-300:]}"
                return
        with (root / "dockerd.log").open("wb") as log:
            process = subprocess.Popen(
                dockerd_args(root, bridge), stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + DOCKERD_START
        while not answers(engine):
            if process.poll() is not None or time.monotonic() > deadline:
                tail = (root / "dockerd.log").read_text(errors="replace").strip()[-600:]
                yield f"dockerd did not answer within {DOCKERD_START:.0f} s:\n{tail}"
                return
            time.sleep(0.1)
        yield _with_base_image(engine)
    finally:
        if process is not None:
            if process.poll() is None:
                ids = subprocess.run(
                    engine.cmd("ps", "-aq"), capture_output=True, text=True, check=False
                ).stdout.split()
                if ids:
                    subprocess.run(engine.cmd("rm", "-f", *ids), capture_output=True, check=False)
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        _ip("link", "delete", bridge)
        shutil.rmtree(root, ignore_errors=True)


def _with_base_image(engine: Engine) -> Engine | str:
    """`engine` once it holds the base image (imported when missing), else why it does not."""
    present = subprocess.run(
        engine.cmd("image", "inspect", BASE_IMAGE), capture_output=True, check=False
    )
    if present.returncode == 0:
        return engine
    if not base_tar().is_file():
        return f"no base image: {base_tar()} is missing (scripts/system-deps.sh makes it)"
    made = subprocess.run(
        engine.cmd("import", "--change", 'CMD ["python3"]', str(base_tar()), BASE_IMAGE),
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if made.returncode != 0:
        return f"importing the base image into {engine.name} failed: {made.stderr.strip()[-300:]}"
    return engine


def need_engine(name: str, docker: Engine | str) -> Engine:
    """The engine `name` for a test: podman as `need_podman`, docker as the session's daemon
    (`docker`: the engine, or why there is none); skips loudly (fails under CI) without it."""
    if name == "podman":
        return need_podman()
    if isinstance(docker, str):
        unavailable("DOCKER", f"docker cannot run here: {docker}")
    return docker

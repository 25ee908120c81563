"""Where images are pushed: TRAINHOOK_REGISTRY, or a CNCF distribution registry (the Debian
`docker-registry` binary, `registry` elsewhere) that `trainhook up` starts on loopback with
its storage under TRAINHOOK_HOME; its address is kept in a file the builders read."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

from trainhook.ports import bindable, free_port
from trainhook.settings import Settings

BINARIES = ("docker-registry", "registry")
START_TIMEOUT = 20.0
PORT_GRACE = 3.0


def local_registry_dir(home: Path) -> Path:
    return home / "oci-registry"


def registry_for(settings: Settings) -> str | None:
    """TRAINHOOK_REGISTRY, else the address of the registry `trainhook up` started, else
    None (nothing to push to)."""
    if settings.registry:
        return settings.registry
    with contextlib.suppress(OSError):
        address = (local_registry_dir(settings.home) / "address").read_text().strip()
        return address or None
    return None


def is_loopback(registry: str) -> bool:
    """A registry on this machine, reached over plain HTTP (the local one serves no TLS)."""
    host = registry.split("/", 1)[0].rsplit(":", 1)[0]
    return host in ("127.0.0.1", "localhost", "[::1]")


def answers(address: str, timeout: float = 2.0) -> bool:
    """Whether the registry API answers at `address` (host:port)."""
    try:
        with urllib.request.urlopen(f"http://{address}/v2/", timeout=timeout) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def _same_port_as_before(folder: Path, grace: float = PORT_GRACE) -> int:
    """The port the registry had last time when it is free, else a new one (kept for next
    time). Release records name images by this address: with a new port after each restart
    of `up`, an older release whose image was removed locally could not be pulled back.

    The kept port is tried for `grace` seconds: the registry of a killed `up` is told to end
    at once (`_dies_with_this_process`), but its process already shows as a zombie while its
    other threads still hold the socket. Under load that took long enough for a restarted
    `up` to give the port up and move every later push to a new address.
    """
    kept = folder / "port"
    with contextlib.suppress(OSError, ValueError):
        port = int(kept.read_text())
        deadline = time.monotonic() + grace
        while not bindable(port):
            if time.monotonic() >= deadline:
                raise OSError(f"port {port} stays taken")
            time.sleep(0.05)
        return port
    port = free_port()
    kept.write_text(f"{port}\n")
    return port


def start_local_registry(home: Path) -> subprocess.Popen[bytes] | None:
    """Start a registry on 127.0.0.1 storing under `home/oci-registry/data` and record its
    address; None when no registry binary is installed. Raises RuntimeError when it does not
    answer within START_TIMEOUT (its output is in `home/oci-registry/registry.log`)."""
    binary = next((b for b in map(shutil.which, BINARIES) if b), None)
    if binary is None:
        return None
    folder = local_registry_dir(home)
    (folder / "data").mkdir(parents=True, exist_ok=True)
    (folder / "address").unlink(missing_ok=True)
    address = f"127.0.0.1:{_same_port_as_before(folder)}"
    config = folder / "config.yml"
    config.write_text(
        "version: 0.1\n"
        "log: {level: warn}\n"
        f"storage: {{filesystem: {{rootdirectory: {folder / 'data'}}}}}\n"
        f"http: {{addr: {address}}}\n"
    )
    log = (folder / "registry.log").open("ab")
    process = subprocess.Popen(
        [*_dies_with_this_process(), binary, "serve", str(config)],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=log,
    )
    log.close()
    deadline = time.monotonic() + START_TIMEOUT
    while not answers(address):
        if process.poll() is not None or time.monotonic() > deadline:
            stop_registry(process)
            raise RuntimeError(
                f"the registry at {address} did not start; see {folder}/registry.log"
            )
        time.sleep(0.1)
    (folder / "address").write_text(address + "\n")
    return process


def _dies_with_this_process() -> list[str]:
    """A command prefix that has the kernel send the registry SIGTERM when the thread that
    started it ends (util-linux `setpriv --pdeathsig`; none where setpriv is missing).

    `up` stops its registry on the way out, but a killed `up` (SIGKILL, the OOM killer) left it
    running, holding the port the next `up` binds again (`_same_port_as_before`), so that
    one could not start its own. `up` starts it from its main thread, which lives as long as
    the process does.
    """
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", "TERM"] if setpriv else []


def stop_registry(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()

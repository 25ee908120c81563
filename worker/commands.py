"""Child processes for stages: a scrubbed environment, streamed output and a hard timeout."""

from __future__ import annotations

import codecs
import logging
import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

FLUSH_BYTES = 16 * 1024
FLUSH_SECONDS = 0.5  # at most this late in the stage log, at most two writes a second
TAIL_CHARS = 64 * 1024
# Names that look like credentials are never passed to repository code.
SECRET_MARKERS = ("SECRET", "TOKEN", "PASSWORD", "PASSWD", "CREDENTIAL", "API_KEY")


def child_env(
    secret_names: Iterable[str] = (),
    extra: Mapping[str, str] | None = None,
    base: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The environment for repository code: the worker's own, minus every trainhook setting
    and secret, with the worker's Python first on PATH (so `python` means this interpreter
    and its installed packages)."""
    source = dict(os.environ if base is None else base)
    drop = set(secret_names)
    env = {
        key: value
        for key, value in source.items()
        if not key.startswith("TRAINHOOK_")
        and key not in drop
        and not any(marker in key.upper() for marker in SECRET_MARKERS)
    }
    bindir = str(Path(sys.executable).parent)
    rest = [p for p in env.get("PATH", os.defpath).split(os.pathsep) if p and p != bindir]
    env["PATH"] = os.pathsep.join([bindir, *rest])
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


@dataclass(frozen=True)
class CommandResult:
    returncode: int
    timed_out: bool
    seconds: float
    tail: str  # the last TAIL_CHARS characters of stdout+stderr

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out

    def last_lines(self, count: int = 20) -> str:
        return "\n".join(self.tail.rstrip().splitlines()[-count:])


def run_command(
    argv: list[str],
    *,
    cwd: Path,
    env: Mapping[str, str],
    timeout: float,
    on_output: Callable[[str], None] | None = None,
) -> CommandResult:
    """Run `argv` (no shell) with stdout and stderr merged; `on_output` receives the text in
    chunks as it arrives. After `timeout` seconds the whole process group is killed.

    Raises OSError when the program cannot be started (e.g. not found)."""
    started = time.monotonic()
    proc = subprocess.Popen(
        argv,
        cwd=cwd,
        env=dict(env),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        # Its own process group: a timeout kills grandchildren too, and a Ctrl-C meant for
        # the worker does not cut a stage short (the worker lets the current stage finish).
        start_new_session=True,
    )
    tail: list[str] = []
    pump = threading.Thread(
        target=_pump, args=(proc, tail, on_output), name="stage-output", daemon=True
    )
    pump.start()
    timed_out = False
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        _kill_group(proc)
        proc.wait()
    except BaseException:
        _kill_group(proc)
        proc.wait()
        raise
    finally:
        # Whatever the command left running in its group ends with it: repository code
        # must not outlive its stage and rewrite the checkout (swap the data for a symlink,
        # change it after the hash) while later stages read it. Also frees the output pipe.
        _kill_group(proc)
        pump.join(timeout=10)
    return CommandResult(
        returncode=proc.returncode,
        timed_out=timed_out,
        seconds=time.monotonic() - started,
        tail="".join(tail)[-TAIL_CHARS:],
    )


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        proc.kill()


def _pump(
    proc: subprocess.Popen[bytes], tail: list[str], on_output: Callable[[str], None] | None
) -> None:
    assert proc.stdout is not None
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    pending: list[str] = []
    pending_size = 0
    pending_since = 0.0
    kept = 0

    def flush() -> None:
        nonlocal pending, pending_size, on_output
        if pending and on_output is not None:
            try:
                on_output("".join(pending))
            except Exception as exc:
                # Keep draining the pipe (or the child would block on a full pipe); the
                # output tail is still kept for the stage's detail.
                log.warning("stage output could not be stored, dropping the rest: %s", exc)
                on_output = None
        pending, pending_size = [], 0

    fd = proc.stdout.fileno()
    while True:
        # Output waits at most FLUSH_SECONDS, even when the command then goes quiet.
        wait = max(0.0, pending_since + FLUSH_SECONDS - time.monotonic()) if pending else None
        readable, _, _ = select.select([fd], [], [], wait)
        if not readable:
            flush()
            continue
        chunk = os.read(fd, 65536)
        text = decoder.decode(chunk, final=not chunk)
        if text:
            tail.append(text)
            kept += len(text)
            if kept > 4 * TAIL_CHARS:  # keep memory bounded for very chatty commands
                joined = "".join(tail)[-TAIL_CHARS:]
                tail[:] = [joined]
                kept = len(joined)
            if not pending:
                pending_since = time.monotonic()
            pending.append(text)
            pending_size += len(text)
        if not chunk:
            break
        if pending_size >= FLUSH_BYTES or time.monotonic() - pending_since >= FLUSH_SECONDS:
            flush()
    flush()
    proc.stdout.close()

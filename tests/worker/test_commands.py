"""Child processes of stages: streamed output, hard timeouts, a scrubbed environment."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from worker.commands import child_env, run_command


def python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def test_output_reaches_the_log_while_the_command_still_runs(tmp_path):
    chunks: list[tuple[float, str]] = []
    code = "import time; print('first', flush=True); time.sleep(2); print('second')"

    result = run_command(
        python(code),
        cwd=tmp_path,
        env=os.environ,
        timeout=30,
        on_output=lambda text: chunks.append((time.monotonic(), text)),
    )
    ended = time.monotonic()

    assert result.ok and "".join(t for _, t in chunks) == "first\nsecond\n"
    assert chunks[0][1] == "first\n" and ended - chunks[0][0] > 1.0


def test_a_failing_log_sink_never_blocks_the_command(tmp_path):
    def broken(text: str) -> None:
        raise ConnectionError("database went away")

    code = "import sys\nfor i in range(20000): print('x' * 30)\nprint('done')"
    result = run_command(python(code), cwd=tmp_path, env=os.environ, timeout=30, on_output=broken)

    assert result.ok and result.last_lines(1) == "done"


def test_timeout_kills_the_command_and_its_children(tmp_path):
    pidfile = tmp_path / "child.pid"
    code = (
        "import subprocess, time\n"
        "child = subprocess.Popen(['sleep', '30'])\n"
        f"open({str(pidfile)!r}, 'w').write(str(child.pid))\n"
        "print('waiting', flush=True)\n"
        "time.sleep(30)\n"
    )
    started = time.monotonic()

    result = run_command(python(code), cwd=tmp_path, env=os.environ, timeout=1.5)

    assert result.timed_out and not result.ok and "waiting" in result.tail
    assert time.monotonic() - started < 10
    child = int(pidfile.read_text())
    time.sleep(0.1)
    assert not Path(f"/proc/{child}").exists() or "Z" in Path(f"/proc/{child}/stat").read_text()


def test_child_environment_has_no_trainhook_settings_or_secrets():
    env = child_env(
        {"GITHUB_WEBHOOK_SECRET_X"},
        base={
            "PATH": "/usr/bin",
            "HOME": "/home/ml",
            "TRAINHOOK_API_TOKEN": "t",
            "GITHUB_WEBHOOK_SECRET_X": "s",
            "MY_HOOK": "kept",
            "AWS_SECRET_ACCESS_KEY": "k",
        },
    )
    assert env["PATH"] == f"{Path(sys.executable).parent}:/usr/bin"
    assert {k for k in env if k != "PYTHONUNBUFFERED"} == {"PATH", "HOME", "MY_HOOK"}

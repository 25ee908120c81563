"""Progress: shown on a terminal (or when forced), silent otherwise."""

from __future__ import annotations

import io

from trainer.progress import Progress


class FakeTty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_is_silent_when_stderr_is_not_a_terminal() -> None:
    stream = io.StringIO()
    progress = Progress.for_mode("auto", stream)
    progress.phase("reading data")
    progress.rows(5000)
    progress.close("done")
    assert not progress.enabled and stream.getvalue() == ""


def test_progress_shows_phase_rows_and_elapsed_on_a_terminal() -> None:
    stream = FakeTty()
    progress = Progress.for_mode("auto", stream)
    progress.phase("reading data")
    progress.rows(12345)
    progress.close("done")
    out = stream.getvalue()
    assert progress.enabled and "\r[trainer]" in out
    assert "reading data | 12,345 rows" in out and out.endswith("\n")
    assert "s | done" in out


def test_progress_can_be_forced_on_and_off() -> None:
    assert Progress.for_mode("on", io.StringIO()).enabled
    forced_off = Progress.for_mode("off", FakeTty())
    forced_off.phase("x")
    assert not forced_off.enabled


def test_a_shorter_line_blanks_out_the_previous_one() -> None:
    stream = FakeTty()
    progress = Progress(True, stream, interval=60)
    progress.phase("a very long phase name")
    progress.phase("short")
    progress.close()
    last = stream.getvalue().split("\r")[2]
    assert last.rstrip().endswith("short") and len(last) >= len("a very long phase name")

"""Progress on a terminal for long runs: phase, rows prepared, elapsed time.

Shown on stderr only when it is a terminal (or when forced); otherwise every call is a no-op,
so logs and captured output stay clean.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import TextIO

MODES = ("auto", "on", "off")


class Progress:
    """A one-line status display that redraws itself while a phase runs."""

    def __init__(self, enabled: bool, stream: TextIO | None = None, interval: float = 0.5) -> None:
        self.enabled = enabled
        self.stream = stream if stream is not None else sys.stderr
        self.interval = interval
        self._start = time.monotonic()
        self._phase = "starting"
        self._rows: int | None = None
        self._width = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None
        if enabled:
            # The ticker keeps the elapsed time moving during long phases without callbacks.
            self._ticker = threading.Thread(target=self._tick, name="trainer-progress", daemon=True)
            self._ticker.start()

    @classmethod
    def for_mode(cls, mode: str = "auto", stream: TextIO | None = None) -> Progress:
        """`auto`: on when `stream` (default stderr) is a TTY; `on`/`off` force it."""
        if mode not in MODES:
            raise ValueError(f"progress mode must be one of {MODES}, not {mode!r}")
        stream = stream if stream is not None else sys.stderr
        if mode == "auto":
            isatty = getattr(stream, "isatty", None)
            enabled = bool(isatty and isatty())
        else:
            enabled = mode == "on"
        return cls(enabled, stream)

    @classmethod
    def quiet(cls) -> Progress:
        """A progress object that shows nothing."""
        return cls(False)

    def phase(self, name: str) -> None:
        """Start a new phase (e.g. "reading data")."""
        self._phase = name
        self._draw()

    def rows(self, count: int) -> None:
        """Report how many rows have been prepared so far."""
        self._rows = count
        self._draw()

    def close(self, message: str | None = None) -> None:
        """Stop redrawing and end the line (with an optional final message)."""
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join(timeout=2)
        if self.enabled:
            if message:
                self._phase = message
            self._draw()
            with self._lock:
                self.stream.write("\n")
                self.stream.flush()

    def render(self) -> str:
        """The status line as it would be shown now."""
        elapsed = time.monotonic() - self._start
        rows = "" if self._rows is None else f" | {self._rows:,} rows"
        return f"[trainer] {elapsed:6.1f}s | {self._phase}{rows}"

    def _draw(self) -> None:
        if not self.enabled:
            return
        line = self.render()
        with self._lock:
            pad = max(0, self._width - len(line))
            self._width = len(line)
            self.stream.write("\r" + line + " " * pad)
            self.stream.flush()

    def _tick(self) -> None:
        while not self._stop.wait(self.interval):
            self._draw()

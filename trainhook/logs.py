"""Log lines: text on a terminal, one JSON object per line for Cloud Logging.

Cloud Logging takes a container's stderr line by line; a plain-text line gets no severity
(so the console shows a healthy worker's INFO as errors) and cannot be filtered by build.
As JSON, it reads `severity`, `message`, `time`, `logging.googleapis.com/labels` and
`logging.googleapis.com/trace`, and keeps every other field as `jsonPayload`.

What a line is about (build, repository, stage, job, attempt) is carried in a context
variable set by the worker loop and the stage recorder, so every log call made while a
build runs is labelled without passing ids through each function.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import IO, Any

FIELDS = ("build_id", "repo", "stage", "job", "attempt")
TRACE = "logging.googleapis.com/trace"
LABELS = "logging.googleapis.com/labels"

_context: ContextVar[Mapping[str, Any] | None] = ContextVar("trainhook_log_context", default=None)

# Loggers whose INFO lines are setup chatter, not events: shown with -v only.
_NOISY_PREFIXES = ("alembic.runtime.plugins", "httpx", "httpcore")
# Alembic's migration logger says which dialect it talks to before every command; the
# "Running upgrade" lines are news and stay at INFO.
_ALEMBIC_CHATTER = ("Context impl", "Will assume")


@contextmanager
def log_context(**fields: Any) -> Iterator[None]:
    """Label every line logged inside the block (in this thread or task) with `fields`."""
    token = _context.set({**current_fields(), **{k: v for k, v in fields.items() if v is not None}})
    try:
        yield
    finally:
        _context.reset(token)


def set_log_field(name: str, value: Any) -> None:
    """Set (or, with None, clear) one label until the enclosing `log_context` ends."""
    current = current_fields()
    if value is None:
        current.pop(name, None)
    else:
        current[name] = value
    _context.set(current)


def current_fields() -> dict[str, Any]:
    return dict(_context.get() or {})


def cloud_trace(header: str | None, project: str | None) -> str | None:
    """The trace name Cloud Logging links to, from an `X-Cloud-Trace-Context` header
    (`TRACE_ID/SPAN_ID;o=1`) or a W3C `traceparent` (`00-TRACE_ID-SPAN_ID-01`)."""
    if not header or not project:
        return None
    parts = header.split("-")
    trace_id = parts[1] if len(parts) == 4 else header.split("/", 1)[0]
    if not trace_id or not all(c in "0123456789abcdefABCDEF" for c in trace_id):
        return None
    return f"projects/{project}/traces/{trace_id}"


def _severity(record: logging.LogRecord) -> str:
    return {"WARN": "WARNING", "FATAL": "CRITICAL"}.get(record.levelname, record.levelname)


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line, with Cloud Logging's field names."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.exc_info:
            # In the message, where Error Reporting looks for a stack trace.
            message = f"{message}\n{self.formatException(record.exc_info)}"
        elif record.stack_info:
            message = f"{message}\n{record.stack_info}"
        fields = current_fields()
        trace = fields.pop("trace", None)
        entry: dict[str, Any] = {
            "severity": _severity(record),
            "message": message,
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="microseconds"),
            "logger": record.name,
        }
        known = {k: fields[k] for k in FIELDS if k in fields}
        entry.update(known)
        if fields:
            entry[LABELS] = {k: str(v) for k, v in fields.items()}
        if trace:
            entry[TRACE] = trace
        return json.dumps(entry, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    """The familiar one-line text, with `[build 7 train]` when a build is known."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        fields = current_fields()
        where = [f"build {fields['build_id']}"] if "build_id" in fields else []
        where += [str(fields["stage"])] if "stage" in fields else []
        if not where:
            return text
        first, newline, rest = text.partition("\n")
        return f"{first} [{' '.join(where)}]{newline}{rest}"


class _Threshold(logging.Filter):
    """Demote library chatter to DEBUG, then keep what reaches the chosen level. On the
    handler, so that a library's own logger level (set by the library) cannot undo it."""

    def __init__(self, level: int) -> None:
        super().__init__()
        self.level = level

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.INFO and _is_chatter(record):
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return record.levelno >= self.level


def _is_chatter(record: logging.LogRecord) -> bool:
    if record.name.startswith(_NOISY_PREFIXES):
        return True
    return record.name == "alembic.runtime.migration" and str(record.msg).startswith(
        _ALEMBIC_CHATTER
    )


def choose_format(env: Mapping[str, str], stream: IO[str] | None = None) -> str:
    """TRAINHOOK_LOG_FORMAT when set; else json under TRAINHOOK_ENV=prod, except on a
    terminal, where a person reads it."""
    wanted = (env.get("TRAINHOOK_LOG_FORMAT") or "").strip()
    if wanted in ("text", "json"):
        return wanted
    stream = stream if stream is not None else sys.stderr
    on_terminal = hasattr(stream, "isatty") and stream.isatty()
    return "json" if env.get("TRAINHOOK_ENV") == "prod" and not on_terminal else "text"


def configure_logging(
    env: Mapping[str, str], *, verbose: bool = False, stream: IO[str] | None = None
) -> str:
    """Send every log record of the process to `stream` (stderr) in the chosen format;
    returns the format. Replaces handlers set before (a second call reconfigures)."""
    stream = stream if stream is not None else sys.stderr
    fmt = choose_format(env, stream)
    level = logging.DEBUG if verbose else logging.INFO
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(_Threshold(level))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    # The root lets DEBUG through to the handler, whose filter decides after demoting.
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    for name in (*_NOISY_PREFIXES, "alembic.runtime.migration"):
        logging.getLogger(name).setLevel(logging.DEBUG if verbose else logging.INFO)
    # Python warnings become log records too, so JSON output stays one object per line.
    logging.captureWarnings(True)
    return fmt

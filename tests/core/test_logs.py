"""Log lines: the format chosen, the fields of a JSON line, library chatter kept at DEBUG."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from trainhook.logs import choose_format, cloud_trace, configure_logging, log_context, set_log_field


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    logging.captureWarnings(False)


@pytest.mark.parametrize(
    ("env", "terminal", "expected"),
    [
        ({}, False, "text"),
        ({"TRAINHOOK_ENV": "prod"}, False, "json"),
        ({"TRAINHOOK_ENV": "prod"}, True, "text"),
        ({"TRAINHOOK_ENV": "prod", "TRAINHOOK_LOG_FORMAT": "text"}, False, "text"),
        ({"TRAINHOOK_LOG_FORMAT": "json"}, True, "json"),
    ],
)
def test_json_is_the_default_in_prod_except_on_a_terminal(env, terminal, expected):
    stream = Terminal() if terminal else io.StringIO()
    assert choose_format(env, stream) == expected


def test_a_json_line_has_cloud_logging_fields_and_the_build_context():
    stream = io.StringIO()
    configure_logging({"TRAINHOOK_LOG_FORMAT": "json"}, stream=stream)
    log = logging.getLogger("trainhook.test")
    with log_context(build_id=7, repo="octo/app", job=3, attempt=2):
        set_log_field("stage", "train")
        with log_context(trace=cloud_trace("4bf92f3577b34da6a3ce929d0e0e4736/1;o=1", "proj")):
            log.warning("slow: %s", "yes")
        set_log_field("stage", None)
        try:
            raise ValueError("boom")
        except ValueError:
            log.exception("failed")
    log.info("outside")
    first, second, third = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["severity"] == "WARNING" and first["message"] == "slow: yes"
    assert (first["build_id"], first["repo"], first["stage"], first["job"], first["attempt"]) == (
        7,
        "octo/app",
        "train",
        3,
        2,
    )
    assert first["logging.googleapis.com/labels"]["stage"] == "train"
    assert (
        first["logging.googleapis.com/trace"]
        == "projects/proj/traces/4bf92f3577b34da6a3ce929d0e0e4736"
    )
    assert second["severity"] == "ERROR" and "stage" not in second
    assert "Traceback" in second["message"] and "ValueError: boom" in second["message"]
    assert "build_id" not in third and "logging.googleapis.com/labels" not in third


def test_text_lines_name_the_build_and_stage():
    stream = io.StringIO()
    configure_logging({}, stream=stream)
    with log_context(build_id=7):
        set_log_field("stage", "hash")
        logging.getLogger("worker.recorder").info("decided")
    assert stream.getvalue().rstrip().endswith("worker.recorder: decided [build 7 hash]")


def test_library_chatter_is_debug_and_shown_with_verbose():
    for verbose in (False, True):
        stream = io.StringIO()
        configure_logging({"TRAINHOOK_LOG_FORMAT": "json"}, verbose=verbose, stream=stream)
        logging.getLogger("alembic.runtime.plugins").info("setup plugin x")
        logging.getLogger("alembic.runtime.migration").info("Context impl SQLiteImpl.")
        logging.getLogger("httpx").info("HTTP Request: GET http://x 200")
        logging.getLogger("alembic.runtime.migration").info("Running upgrade 1 -> 2")
        lines = [json.loads(line) for line in stream.getvalue().splitlines()]
        if verbose:
            assert [e["severity"] for e in lines] == ["DEBUG", "DEBUG", "DEBUG", "INFO"]
        else:
            assert [e["message"] for e in lines] == ["Running upgrade 1 -> 2"]


def test_python_warnings_become_log_lines():
    stream = io.StringIO()
    configure_logging({"TRAINHOOK_LOG_FORMAT": "json"}, stream=stream)
    import warnings

    warnings.warn("old thing", DeprecationWarning, stacklevel=1)
    [entry] = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert entry["severity"] == "WARNING" and "old thing" in entry["message"]

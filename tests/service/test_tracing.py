"""A request's trace header reaches every log line written while the request is handled."""

from __future__ import annotations

import dataclasses
import io
import json
import logging
from collections.abc import Iterator

import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from service.app import create_app
from service.tracing import TraceContext
from trainhook.logs import TRACE, JsonFormatter
from trainhook.runtime import Runtime

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
OTHER_ID = "0af7651916cd43dd8448eb211c80319c"


@pytest.fixture
def lines() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    log = logging.getLogger("tests.tracing")
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    yield stream
    log.removeHandler(handler)


def logging_app(project: str | None) -> Starlette:
    async def handler(request: Request) -> PlainTextResponse:
        logging.getLogger("tests.tracing").info("handled")
        return PlainTextResponse("ok")

    return Starlette(
        routes=[Route("/", handler)], middleware=[Middleware(TraceContext, project=project)]
    )


def logged_trace(project: str | None, headers: dict[str, str], lines: io.StringIO) -> str | None:
    with TestClient(logging_app(project)) as client:
        assert client.get("/", headers=headers).text == "ok"
    (line,) = lines.getvalue().splitlines()
    return json.loads(line).get(TRACE)


@pytest.mark.parametrize(
    "headers",
    [
        {"X-Cloud-Trace-Context": f"{TRACE_ID}/1;o=1"},
        {"X-Cloud-Trace-Context": TRACE_ID},
        {"traceparent": f"00-{TRACE_ID}-00f067aa0ba902b7-01"},
    ],
)
def test_a_trace_header_names_the_trace_of_every_line_logged_for_the_request(headers, lines):
    assert logged_trace("my-proj", headers, lines) == f"projects/my-proj/traces/{TRACE_ID}"


def test_googles_header_wins_over_a_clients_traceparent(lines):
    headers = {
        "traceparent": f"00-{OTHER_ID}-00f067aa0ba902b7-01",
        "X-Cloud-Trace-Context": f"{TRACE_ID}/1;o=1",
    }
    assert logged_trace("my-proj", headers, lines) == f"projects/my-proj/traces/{TRACE_ID}"


def test_a_malformed_cloud_header_falls_back_to_traceparent(lines):
    headers = {
        "X-Cloud-Trace-Context": "not-hex/1",
        "traceparent": f"00-{TRACE_ID}-00f067aa0ba902b7-01",
    }
    assert logged_trace("my-proj", headers, lines) == f"projects/my-proj/traces/{TRACE_ID}"


@pytest.mark.parametrize(
    ("project", "headers"),
    [
        (None, {"X-Cloud-Trace-Context": f"{TRACE_ID}/1;o=1"}),  # no project: no trace name
        ("my-proj", {}),
        ("my-proj", {"traceparent": "garbage"}),
    ],
)
def test_no_trace_is_logged_without_a_project_or_a_usable_header(project, headers, lines):
    assert logged_trace(project, headers, lines) is None


def test_the_trace_does_not_outlive_its_request(lines):
    with TestClient(logging_app("my-proj")) as client:
        client.get("/", headers={"X-Cloud-Trace-Context": f"{TRACE_ID}/1"})
        client.get("/")
    first, second = (json.loads(line) for line in lines.getvalue().splitlines())
    assert TRACE in first and TRACE not in second


@pytest.mark.parametrize(
    ("fields", "project"),
    [
        ({"gcp_project": "build-proj", "pubsub_project": "queue-proj"}, "build-proj"),
        ({"gcp_project": None, "pubsub_project": "queue-proj"}, "queue-proj"),
        ({"gcp_project": None, "pubsub_project": ""}, None),
    ],
)
def test_the_service_names_traces_in_its_configured_project(runtime: Runtime, fields, project):
    runtime.settings = dataclasses.replace(runtime.settings, **fields)
    app = create_app(runtime)
    (trace,) = [m for m in app.user_middleware if m.cls is TraceContext]
    assert trace.kwargs == {"project": project}

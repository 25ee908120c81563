"""A fake Cloud Build REST server for the real google-cloud-build client (see TESTING.md).

Builds advance on a simulated clock: every GET of a build moves its clock by `Plan.tick`
seconds, so a test polls through QUEUED, WORKING and a terminal status in milliseconds and the
step timings it reads back are exact. Steps start when their `waitFor` steps end (all previous
steps without one); the first failing step ends the build and cancels the steps running then.
Faults: a create whose answer is lost after the build exists (503, a slow answer, a dropped
connection), GETs answering 503, a stale (out-of-order) snapshot, a build left to expire.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import socket
import threading
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import uvicorn
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from tests.cloudbuild.rules import invalid

BASE_TIME = datetime(2030, 1, 1, tzinfo=UTC)
BUILD_PATH = re.compile(
    r"^/v1/projects/(?P<project>[^/]+)(?:/locations/(?P<location>[^/]+))?/builds"
    r"(?:/(?P<id>[^/:]+))?(?P<cancel>:cancel)?$"
)
OPERATION_PATH = re.compile(r"^/v1/operations/build/(?P<project>[^/]+)/(?P<id>[^/]+)$")
TAG_FILTER = re.compile(r'tags\s*=\s*"([^"]+)"')
FAILED = {"FAILURE", "TIMEOUT", "INTERNAL_ERROR"}
STEP_FAILURE_TO_BUILD = {s: s for s in FAILED}
METADATA = "type.googleapis.com/google.devtools.cloudbuild.v1.BuildOperationMetadata"
BUILD_TYPE = "type.googleapis.com/google.devtools.cloudbuild.v1.Build"
ECHOED = ("tags", "substitutions", "images", "source", "timeout", "queueTtl")
CONSOLE = "https://console.cloud.google.com/cloud-build/builds;region={}/{}?project={}"


@dataclass
class Plan:
    """How the next builds created will behave."""

    outcomes: dict[str, str] = field(default_factory=dict)  # step id -> FAILURE|TIMEOUT|…
    durations: dict[str, float] = field(default_factory=dict)  # step id -> seconds [20]
    queued_for: float = 10.0  # seconds in QUEUED before the first step starts
    tick: float = 15.0  # simulated seconds each GET of the build moves its clock
    expire: bool = False  # never leaves the queue: EXPIRED after `queued_for`
    create_fault: str | None = None  # "503" | "slow" | "drop": created, but the answer is lost
    create_faults: int = 1  # how many creates get `create_fault`
    slow_seconds: float = 1.5
    get_faults: int = 0  # this many GETs answer 503 first
    stale_gets: frozenset[int] = frozenset()  # the n-th GETs of a build answer its first snapshot
    refuse: tuple[int, str, str] | None = None  # every create answers this error
    cancel_after_gets: int | None = None  # someone cancels it (console) at this GET
    faults_used: dict[str, int] = field(default_factory=lambda: {"create": 0, "get": 0})


def _ts(value: datetime) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class FakeBuild:
    id: str
    project: str
    location: str
    request: dict[str, Any]
    plan: Plan
    created: datetime
    elapsed: float = 0.0
    gets: int = 0
    cancelled_at: float | None = None
    schedule: dict[str, tuple[float, float]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        ends: dict[str, float] = {}
        for step in self.request.get("steps", []):
            wait = step.get("waitFor") or list(ends)
            deps = [] if wait == ["-"] else wait
            start = max([ends[d] for d in deps], default=self.plan.queued_for)
            ends[step["id"]] = start + self.plan.durations.get(step["id"], 20.0)
            self.schedule[step["id"]] = (start, ends[step["id"]])

    def _end(self) -> tuple[float, str]:
        """When the build ends and how, ignoring cancellation."""
        if self.plan.expire:
            return self.plan.queued_for, "EXPIRED"
        failing = [
            (end, self.plan.outcomes[step_id])
            for step_id, (_, end) in self.schedule.items()
            if self.plan.outcomes.get(step_id, "SUCCESS") != "SUCCESS"
        ]
        if failing:
            end, outcome = min(failing)
            return end, STEP_FAILURE_TO_BUILD[outcome]
        return max((end for _, end in self.schedule.values()), default=0.0), "SUCCESS"

    def snapshot(self, at: float | None = None) -> dict[str, Any]:
        t = self.elapsed if at is None else at
        end, outcome = self._end()
        if self.cancelled_at is not None and self.cancelled_at < end:
            end, outcome = self.cancelled_at, "CANCELLED"
        finished = t >= end
        now = min(t, end)
        steps = []
        for step in self.request.get("steps", []):
            start, stop = self.schedule[step["id"]]
            out = {k: step[k] for k in ("id", "name", "args", "waitFor") if k in step}
            if self.plan.expire or now < start or (finished and start >= end):
                out["status"] = "QUEUED"
            elif now < stop and not (finished and stop > end):
                out["status"] = "WORKING"
                out["timing"] = {"startTime": _ts(self.created + timedelta(seconds=start))}
            else:
                mine = self.plan.outcomes.get(step["id"], "SUCCESS")
                status = mine if stop <= end else "CANCELLED"
                if outcome == "CANCELLED" and stop > end:
                    status = "CANCELLED"
                out["status"] = status
                out["timing"] = {
                    "startTime": _ts(self.created + timedelta(seconds=start)),
                    "endTime": _ts(self.created + timedelta(seconds=min(stop, end))),
                }
            steps.append(out)
        status = outcome if finished else ("QUEUED" if t < self.plan.queued_for else "WORKING")
        build: dict[str, Any] = {
            "id": self.id,
            "projectId": self.project,
            "name": f"projects/{self.project}/locations/{self.location}/builds/{self.id}",
            "status": status,
            "createTime": _ts(self.created),
            "logUrl": CONSOLE.format(self.location, self.id, self.project),
            "steps": steps,
            **{k: self.request[k] for k in ECHOED if k in self.request},
        }
        if status != "QUEUED" and not self.plan.expire:
            build["startTime"] = _ts(self.created + timedelta(seconds=self.plan.queued_for))
        if finished:
            build["finishTime"] = _ts(self.created + timedelta(seconds=end))
            failed = [s for s in steps if s["status"] in FAILED]
            if failed:
                detail = (
                    f'Build step failure: build step "{failed[0]["id"]}" failed: '
                    "step exited with non-zero status: 1"
                )
                build["statusDetail"] = detail
                build["failureInfo"] = {"type": "USER_BUILD_STEP", "detail": detail}
            elif outcome == "EXPIRED":
                build["statusDetail"] = "build expired in queue: queueTtl exceeded"
        return build

    @property
    def terminal(self) -> bool:
        return self.snapshot()["status"] not in ("QUEUED", "WORKING")


def _error(code: int, status: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message, "status": status}}, code)


class FakeCloudBuild:
    """The server state and its ASGI app. `plan` applies to builds created after it is set."""

    def __init__(self) -> None:
        self.plan = Plan()
        self.builds: dict[str, FakeBuild] = {}
        self.requests: list[tuple[str, str]] = []
        self.cancels: list[str] = []
        self._count = itertools.count()
        self.lock = threading.Lock()

    def create(self, project: str, location: str, request: dict[str, Any]) -> FakeBuild:
        with self.lock:
            n = next(self._count)
            build = FakeBuild(
                id=str(uuid.UUID(int=n + 1)),
                project=project,
                location=location,
                request=request,
                plan=self.plan,
                created=BASE_TIME + timedelta(minutes=10 * n),
            )
            self.builds[build.id] = build
        return build

    def operation(self, build: FakeBuild) -> dict[str, Any]:
        snapshot = build.snapshot()
        op: dict[str, Any] = {
            "name": f"operations/build/{build.project}/{build.id}",
            "done": build.terminal,
            "metadata": {
                "@type": METADATA,
                "build": snapshot,
            },
        }
        if build.terminal:
            op["response"] = {"@type": BUILD_TYPE, **snapshot}
        return op

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        request = Request(scope, receive)
        self.requests.append((request.method, request.url.path))
        response = await self._dispatch(request, send)
        if response is not None:
            await response(scope, receive, send)

    async def _dispatch(self, request: Request, send: Any) -> Response | None:
        path, method = request.url.path, request.method
        if match := OPERATION_PATH.match(path):
            build = self.builds.get(match["id"])
            if build is None:
                return _error(404, "NOT_FOUND", "no such operation")
            return JSONResponse(self.operation(build))
        match = BUILD_PATH.match(path)
        if match is None:
            return _error(404, "NOT_FOUND", f"no route {method} {path}")
        project, location = match["project"], match["location"] or "global"
        if method == "POST" and match["id"] is None:
            return await self._create(project, location, await request.json(), send)
        if method == "GET" and match["id"] is None:
            wanted = TAG_FILTER.findall(request.query_params.get("filter", ""))
            found = [
                b.snapshot()
                for b in sorted(self.builds.values(), key=lambda b: b.created, reverse=True)
                if b.project == project and all(t in b.request.get("tags", []) for t in wanted)
            ]
            return JSONResponse({"builds": found})
        build = self.builds.get(match["id"] or "")
        if build is None or build.project != project:
            return _error(404, "NOT_FOUND", f"build {match['id']} not found")
        if method == "POST" and match["cancel"]:
            self.cancels.append(build.id)
            if build.terminal:
                return _error(400, "FAILED_PRECONDITION", "build is not running")
            build.cancelled_at = build.elapsed
            return JSONResponse(build.snapshot())
        if method == "GET":
            return self._get(build)
        return _error(405, "INVALID_ARGUMENT", f"{method} not allowed")

    async def _create(
        self, project: str, location: str, body: dict[str, Any], send: Any
    ) -> Response | None:
        if self.plan.refuse is not None:
            code, status, message = self.plan.refuse
            return _error(code, status, message)
        if problem := invalid(body):
            return _error(400, "INVALID_ARGUMENT", problem)
        build = self.create(project, location, body)
        plan = build.plan
        if plan.create_fault and plan.faults_used["create"] < plan.create_faults:
            plan.faults_used["create"] += 1
            if plan.create_fault == "503":
                return _error(503, "UNAVAILABLE", "the service is unavailable")
            if plan.create_fault == "slow":
                await asyncio.sleep(plan.slow_seconds)
            if plan.create_fault == "drop":
                # Headers promise a body that never comes: the client sees the connection drop.
                headers = [(b"content-type", b"application/json"), (b"content-length", b"5000")]
                await send({"type": "http.response.start", "status": 200, "headers": headers})
                await send({"type": "http.response.body", "body": b'{"name": ', "more_body": True})
                raise ConnectionAbortedError("fake: connection dropped")
        return JSONResponse(self.operation(build))

    def _get(self, build: FakeBuild) -> Response:
        with self.lock:
            if build.plan.faults_used["get"] < build.plan.get_faults:
                build.plan.faults_used["get"] += 1
                return _error(503, "UNAVAILABLE", "try again")
            build.gets += 1
            if build.gets in build.plan.stale_gets:
                return JSONResponse(build.snapshot(at=0.0))
            build.elapsed += build.plan.tick
            if build.gets == build.plan.cancel_after_gets and not build.terminal:
                build.cancelled_at = build.elapsed
            return JSONResponse(build.snapshot())


class ServerThread:
    """Serve `app` with uvicorn on a free loopback port in a daemon thread."""

    def __init__(self, app: Any) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        config = uvicorn.Config(app, log_level="critical", lifespan="off", access_log=False)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> ServerThread:
        self.thread.start()
        for _ in range(500):
            if self.server.started:
                return self
            threading.Event().wait(0.01)
        raise RuntimeError("fake server did not start")

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=5)
        self.sock.close()


def dump(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True)

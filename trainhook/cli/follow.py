"""Following builds from a terminal: `builds`, `build N`, `watch N`, `cancel N` and
`rebuild --watch`, over HTTP against a running service (TRAINHOOK_URL, with
TRAINHOOK_API_TOKEN for actions), so they work from a laptop against a remote instance.

Only the service's public JSON API is used (`/api/builds`, `/api/builds/N`,
`/api/builds/N/cancel`, `/rebuild`): nothing here reads the database.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from typing import Any

from trainhook.errors import TrainhookError

DEFAULT_URL = "http://127.0.0.1:8000"
TERMINAL = ("succeeded", "failed", "cancelled", "superseded")
EXIT_SUCCEEDED, EXIT_FAILED = 0, 1


class ServiceClient:
    """The service's JSON API. Errors become TrainhookError with the service's message."""

    def __init__(self, base: str, token: str | None = None, timeout: float = 10.0) -> None:
        self.base = base.rstrip("/")
        self.token = token
        self.timeout = timeout

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> ServiceClient:
        base = env.get("TRAINHOOK_URL") or env.get("TRAINHOOK_PUBLIC_URL") or DEFAULT_URL
        url = urllib.parse.urlparse(base)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise TrainhookError(f"TRAINHOOK_URL={base!r}: expected http(s)://host[:port]")
        return cls(base, env.get("TRAINHOOK_API_TOKEN") or None)

    def url(self, path: str) -> str:
        return self.base + path

    def request(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url(path), data=data, method=method)
        request.add_header("Accept", "application/json")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        if self.token and method != "GET":
            request.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as answer:
                return json.loads(answer.read() or b"null")
        except urllib.error.HTTPError as exc:
            try:
                message = json.loads(exc.read()).get("error") or exc.reason
            except (ValueError, AttributeError):
                message = exc.reason
            raise TrainhookError(f"{method} {self.url(path)}: {exc.code} {message}") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise TrainhookError(
                f"cannot reach {self.base} ({reason}); set TRAINHOOK_URL"
            ) from None

    def builds(self, **filters: Any) -> list[dict[str, Any]]:
        query = urllib.parse.urlencode({k: v for k, v in filters.items() if v})
        return list(self.request("GET", "/api/builds" + (f"?{query}" if query else ""))["builds"])

    def build(self, build_id: int) -> dict[str, Any]:
        return dict(self.request("GET", f"/api/builds/{build_id}"))

    def cancel(self, build_id: int) -> dict[str, Any]:
        return dict(self.request("POST", f"/api/builds/{build_id}/cancel"))

    def logs(self, build_id: int, after: int = 0) -> dict[str, Any]:
        return dict(self.request("GET", f"/api/builds/{build_id}/logs?after={after}"))

    def rebuild(self, body: dict[str, Any]) -> int:
        return int(self.request("POST", "/rebuild", body)["build_id"])


def _seconds(value: Any) -> str:
    return f"{value:.1f}s" if isinstance(value, int | float) else "-"


def build_line(client: ServiceClient, build: Mapping[str, Any]) -> str:
    sha = str(build.get("sha") or "")[:12]
    page = client.url(f"/builds/{build['id']}")
    return (
        f"{build['id']:>6}  {build['status']:<10}  {build['repo']}  {build.get('ref') or ''} "
        f"{sha}  {_seconds(build.get('duration_s'))}  {page}"
    )


def stage_line(stage: Mapping[str, Any]) -> str:
    cache = f" [cache {stage['cache']}]" if stage.get("cache") else ""
    detail = str(stage.get("detail") or "").splitlines()
    first = f": {detail[0][:160]}" if detail else ""
    duration = _seconds(stage.get("duration_s"))
    return f"  {stage['name']:<9} {stage['status']:<9} {duration:>8}{cache}{first}"


def show_build(client: ServiceClient, build: Mapping[str, Any]) -> list[str]:
    return [build_line(client, build), *(stage_line(s) for s in build.get("stages", []))]


def watch(
    client: ServiceClient,
    build_id: int,
    emit: Callable[[str], None] = print,
    *,
    interval: float = 1.0,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """Print each stage as its status changes until the build ends; 0 when it succeeded,
    1 otherwise (failed, cancelled, superseded)."""
    seen: dict[str, str] = {}
    emit(f"watching build {build_id}: {client.url(f'/builds/{build_id}')}")
    while True:
        build = client.build(build_id)
        for stage in build.get("stages", []):
            if seen.get(stage["name"]) != stage["status"]:
                seen[stage["name"]] = stage["status"]
                emit(stage_line(stage))
        if build["status"] in TERMINAL:
            emit(f"build {build_id} {build['status']} in {_seconds(build.get('duration_s'))}")
            return EXIT_SUCCEEDED if build["status"] == "succeeded" else EXIT_FAILED
        sleep(interval)


def follow_logs(
    client: ServiceClient,
    build_id: int,
    stage: str | None,
    emit: Callable[[str], None],
    *,
    follow: bool = False,
    interval: float = 1.0,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """Print a build's logs (one stage's, or every stage's under a header); with `follow`,
    keep printing what is written until the build ends. Exit code as `watch`."""
    after, last_stage = 0, None
    while True:
        answer = client.logs(build_id, after)
        for name, text in answer["logs"].items():
            if stage is not None and name != stage:
                continue
            if stage is None and name != last_stage:
                emit(f"==> {name} <==")
                last_stage = name
            emit(text.rstrip("\n"))
        after = int(answer["next"])
        if not follow or answer["status"] in TERMINAL:
            if answer["status"] not in TERMINAL:
                return EXIT_SUCCEEDED
            return EXIT_SUCCEEDED if answer["status"] == "succeeded" else EXIT_FAILED
        sleep(interval)

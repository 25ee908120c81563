"""Ingest benchmark: signed pushes per second through the real app vs a bare HMAC route.

    uv run python bench/ingest/run.py [--duration 10] [--connections 64]

Both apps run under uvicorn (one process each, no access log, loopback, a free port), one
after the other, fed the SAME ~7 KB signed GitHub push body; every request carries a new
X-GitHub-Delivery (not covered by the signature), so the real app records each one: the
delivery, its build, three stage events and a job row, in one SQLite transaction.

The load generator is wrk (Lua script push.lua) when it is on PATH, else a Python
asyncio + httpx generator (slower: it may then be the bottleneck, and the output says so).
Each server is warmed up, then measured; non-202 answers and socket errors are counted, and
the rows in the database are checked against the 202 answers. Exit status: 0 for a clean
run (whatever the verdict), 1 when any request failed or the database disagrees.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import hashlib
import hmac
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa

from trainhook.db import upgrade

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]

REPO = "octo-org/social-score-api"
SECRET_ENV = "BENCH_WEBHOOK_SECRET"
SECRET = "bench-secret-0123456789abcdef"
URL_PATH = "/webhooks/github"

TARGET_RATIO = 0.20  # real req/s over bare req/s, at least
TARGET_P99_MS = 30.0  # real app p99, at most

REPO_TOML = f"""
[[repos]]
name = "{REPO}"
provider = "github"
clone_url = "https://github.com/{REPO}.git"
branches = ["main"]
secret_env = "{SECRET_ENV}"
"""


# --- the request ---------------------------------------------------------------------------


def _sha(seed: str) -> str:
    return hashlib.sha1(seed.encode()).hexdigest()


def push_payload(commits: int = 5) -> dict[str, Any]:
    """A push to main as GitHub sends it (docs.github.com, webhook events: push)."""
    owner, name = REPO.split("/")
    api = f"https://api.github.com/repos/{REPO}"
    html = f"https://github.com/{REPO}"
    before, after = _sha("before"), _sha(f"commit-{commits - 1}")
    person = {"name": "Mona Lisa", "email": "mona@example.com", "username": "monalisa"}
    files = ["src/app/model.py", "src/app/features.py", "data/train.csv", "tests/test_model.py"]
    commit_list = [
        {
            "id": _sha(f"commit-{i}"),
            "tree_id": _sha(f"tree-{i}"),
            "distinct": True,
            "message": f"Retrain step {i}: refresh features and thresholds\n\n"
            "Adds new labelled rows and tunes the classifier threshold.",
            "timestamp": f"2026-11-28T10:{i:02d}:00+01:00",
            "url": f"{html}/commit/{_sha(f'commit-{i}')}",
            "author": person,
            "committer": person,
            "added": [f"data/batch-{i}.csv"],
            "removed": [],
            "modified": files[: 1 + i % len(files)],
        }
        for i in range(commits)
    ]
    user = {
        "login": "monalisa",
        "id": 583231,
        "node_id": "MDQ6VXNlcjU4MzIzMQ==",
        "avatar_url": "https://avatars.githubusercontent.com/u/583231?v=4",
        "url": "https://api.github.com/users/monalisa",
        "html_url": "https://github.com/monalisa",
        "type": "User",
        "site_admin": False,
    }
    repository: dict[str, Any] = {
        "id": 1296269,
        "node_id": "MDEwOlJlcG9zaXRvcnkxMjk2MjY5",
        "name": name,
        "full_name": REPO,
        "private": False,
        "owner": {"name": owner, "email": None, **user, "login": owner, "type": "Organization"},
        "html_url": html,
        "description": "Social score prediction API",
        "fork": False,
        "url": html,
        "created_at": 1700000000,
        "updated_at": "2026-11-28T09:00:00Z",
        "pushed_at": 1764320400,
        "git_url": f"git://github.com/{REPO}.git",
        "ssh_url": f"git@github.com:{REPO}.git",
        "clone_url": f"{html}.git",
        "homepage": None,
        "size": 1280,
        "stargazers_count": 12,
        "watchers_count": 12,
        "language": "Python",
        "default_branch": "main",
        "master_branch": "main",
        "topics": ["ml", "starlette"],
        "visibility": "public",
    }
    for key in (
        "forks",
        "hooks",
        "events",
        "branches",
        "tags",
        "git_refs",
        "trees",
        "statuses",
        "languages",
        "contributors",
        "commits",
        "compare",
        "contents",
        "issues",
        "pulls",
        "releases",
        "deployments",
    ):
        repository[f"{key}_url"] = f"{api}/{key}"
    return {
        "ref": "refs/heads/main",
        "before": before,
        "after": after,
        "repository": repository,
        "pusher": {"name": "monalisa", "email": "mona@example.com"},
        "sender": user,
        "created": False,
        "deleted": False,
        "forced": False,
        "base_ref": None,
        "compare": f"{html}/compare/{before[:12]}...{after[:12]}",
        "commits": commit_list,
        "head_commit": commit_list[-1],
    }


def signed_request() -> tuple[bytes, dict[str, str]]:
    """The body and the headers GitHub would send, minus X-GitHub-Delivery (set per request)."""
    body = json.dumps(push_payload(), separators=(",", ":")).encode()
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "GitHub-Hookshot/044aadd",
        "Accept": "*/*",
        "X-GitHub-Event": "push",
        "X-GitHub-Hook-ID": "292430182",
        "X-GitHub-Hook-Installation-Target-ID": "1296269",
        "X-GitHub-Hook-Installation-Target-Type": "repository",
        "X-Hub-Signature": "sha1=" + hmac.new(SECRET.encode(), body, hashlib.sha1).hexdigest(),
        "X-Hub-Signature-256": "sha256="
        + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest(),
    }
    return body, headers


# --- results -------------------------------------------------------------------------------


@dataclass
class Result:
    requests: int  # answered
    seconds: float
    accepted: int  # 202
    rejected: int  # any other status
    socket_errors: int  # connect/read/write errors and timeouts
    p50_ms: float
    p99_ms: float
    max_ms: float

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def errors(self) -> int:
        return self.rejected + self.socket_errors


def parse_wrk(output: str) -> Result:
    line = next((x for x in output.splitlines() if x.startswith("INGEST ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no INGEST summary:\n{output}")
    v = {k: int(n) for k, n in re.findall(r"(\w+)=(\d+)", line)}
    return Result(
        requests=v["requests"],
        seconds=v["duration_us"] / 1e6,
        accepted=v["accepted"],
        rejected=v["rejected"],
        socket_errors=v["connect"] + v["read"] + v["write"] + v["timeout"],
        p50_ms=v["p50_us"] / 1000,
        p99_ms=v["p99_us"] / 1000,
        max_ms=v["max_us"] / 1000,
    )


# --- load generators -----------------------------------------------------------------------


class Wrk:
    name = "wrk"

    def __init__(self, exe: str, work: Path, body: bytes, headers: dict[str, str]) -> None:
        self.exe = exe
        self.headers_file = work / "headers.txt"
        self.body_file = work / "body.json"
        self.headers_file.write_text("".join(f"{k}: {v}\n" for k, v in headers.items()))
        self.body_file.write_bytes(body)

    def run(self, url: str, connections: int, threads: int, seconds: float, tag: str) -> Result:
        cmd = [
            self.exe,
            f"--threads={threads}",
            f"--connections={connections}",
            f"--duration={max(1, round(seconds))}s",
            "--timeout=5s",
            "--latency",
            f"--script={HERE / 'push.lua'}",
            url,
            "--",
            tag,
            str(self.headers_file),
            str(self.body_file),
        ]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"wrk failed ({done.returncode}):\n{done.stdout}{done.stderr}")
        return parse_wrk(done.stdout)


class PythonLoad:
    """asyncio + httpx, `connections` concurrent keep-alive clients; same accounting as wrk."""

    name = "python (asyncio+httpx)"

    def __init__(self, body: bytes, headers: dict[str, str]) -> None:
        self.body = body
        self.headers = headers

    def run(self, url: str, connections: int, threads: int, seconds: float, tag: str) -> Result:
        return asyncio.run(self._run(url, connections, seconds, tag))

    async def _run(self, url: str, connections: int, seconds: float, tag: str) -> Result:
        # One client (one keep-alive connection) per worker: a pool shared by many tasks costs
        # far more client CPU per request. Clients share one TLS context (unused over http, but
        # building one per client loads the CA bundle each time) and exist before the clock runs.
        latencies: list[float] = []
        counts = {"accepted": 0, "rejected": 0, "socket": 0}
        tls = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
        clients = [
            httpx.AsyncClient(limits=limits, timeout=5.0, verify=tls) for _ in range(connections)
        ]
        loop = asyncio.get_running_loop()

        async def worker(no: int, client: httpx.AsyncClient) -> None:
            n = 0
            while loop.time() < deadline:
                n += 1
                headers = {**self.headers, "X-GitHub-Delivery": f"{tag}-{no}-{n}"}
                t0 = time.perf_counter()
                try:
                    answer = await client.post(url, content=self.body, headers=headers)
                except httpx.HTTPError:
                    counts["socket"] += 1
                    continue
                latencies.append(time.perf_counter() - t0)
                counts["accepted" if answer.status_code == 202 else "rejected"] += 1

        started = loop.time()
        deadline = started + seconds
        try:
            await asyncio.gather(*(worker(i, c) for i, c in enumerate(clients)))
            elapsed = loop.time() - started
        finally:
            for client in clients:
                await client.aclose()
        latencies.sort()

        def pct(p: float) -> float:
            if not latencies:
                return 0.0
            return latencies[min(len(latencies) - 1, int(p / 100 * len(latencies)))] * 1000

        return Result(
            requests=len(latencies),
            seconds=elapsed,
            accepted=counts["accepted"],
            rejected=counts["rejected"],
            socket_errors=counts["socket"],
            p50_ms=pct(50),
            p99_ms=pct(99),
            max_ms=latencies[-1] * 1000 if latencies else 0.0,
        )


# --- servers -------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def uvicorn_server(
    app: str, env: dict[str, str], log: Path, factory: bool = False
) -> Iterator[str]:
    """Serve `app` (module:attr under bench/ingest) in its own uvicorn process; yield its URL."""
    port = free_port()
    cmd = [
        sys.executable,
        "-m",
        "uvicorn",
        app,
        "--app-dir",
        str(HERE),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--no-access-log",
        "--log-level",
        "warning",
    ]
    if factory:
        cmd.append("--factory")
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"{app} exited at start:\n{log.read_text()}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{app} did not listen within 30 s:\n{log.read_text()}")
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def smoke(url: str, body: bytes, headers: dict[str, str], tag: str) -> None:
    """One request before any load: the setup is right when it answers 202."""
    answer = httpx.post(url, content=body, headers={**headers, "X-GitHub-Delivery": tag})
    if answer.status_code != 202:
        raise RuntimeError(f"smoke request answered {answer.status_code}: {answer.text}")


def cpu_busy(seconds: float = 1.0) -> float | None:
    """The fraction of all CPUs in use over `seconds` (Linux), before the servers start."""

    def sample() -> tuple[int, int]:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        return sum(fields), fields[3] + fields[4]  # total, idle + iowait

    try:
        total0, idle0 = sample()
        time.sleep(seconds)
        total1, idle1 = sample()
    except (OSError, ValueError, IndexError):
        return None
    return 1 - (idle1 - idle0) / max(1, total1 - total0)


def count_rows(db_url: str) -> dict[str, int]:
    engine = sa.create_engine(db_url)
    try:
        with engine.connect() as conn:
            return {
                table: int(conn.exec_driver_sql(f"SELECT count(*) FROM {table}").scalar_one())
                for table in ("deliveries", "builds", "stage_events", "jobs")
            }
    finally:
        engine.dispose()


# --- main ----------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds measured per app")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of warm-up per app")
    parser.add_argument("--threads", type=int, default=1, help="wrk threads (default 1)")
    parser.add_argument("--loadgen", choices=("auto", "wrk", "python"), default="auto")
    parser.add_argument("--keep", action="store_true", help="keep the temporary home")
    args = parser.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="trainhook-bench-ingest-"))
    try:
        return run(args, work)
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def run(args: argparse.Namespace, work: Path) -> int:
    home = work / "home"
    config = work / "trainhook.toml"
    config.write_text(REPO_TOML)
    db_url = f"sqlite:///{home / 'trainhook.db'}"
    env = {
        **os.environ,
        "TRAINHOOK_HOME": str(home),
        "TRAINHOOK_CONFIG": str(config),
        "TRAINHOOK_DATABASE_URL": db_url,
        "TRAINHOOK_ENV": "dev",
        SECRET_ENV: SECRET,
        "BENCH_SECRET_ENV": SECRET_ENV,
    }
    upgrade(db_url)
    body, headers = signed_request()

    exe = shutil.which("wrk") if args.loadgen != "python" else None
    if args.loadgen == "wrk" and exe is None:
        print("wrk is not on PATH (--loadgen wrk)", file=sys.stderr)
        return 1
    loadgen: Wrk | PythonLoad
    if exe:
        loadgen = Wrk(exe, work, body, headers)
    else:
        if args.loadgen == "auto":
            print(
                "wrk not found on PATH: falling back to the Python asyncio+httpx load generator.\n"
                "  It is much slower than wrk and may itself be the bottleneck (it shares the\n"
                "  CPU with the server); install wrk for figures comparable with the README."
            )
        loadgen = PythonLoad(body, headers)

    busy = cpu_busy()
    print(
        f"ingest benchmark: {len(body)} B signed push, {args.connections} connections, "
        f"{args.warmup:g}s warm-up + {args.duration:g}s per app, load: {loadgen.name}, "
        f"{os.cpu_count()} CPUs" + ("" if busy is None else f", {busy:.0%} busy before the run")
    )
    if busy is not None and busy > 0.15:
        print("  note: other processes are using the CPU; expect low, noisy figures")
    results: dict[str, Result] = {}
    answered_202: dict[str, int] = {}
    warmup_errors = 0
    pid = os.getpid()
    for label, app, factory in (
        ("bare (HMAC only)", "bare:app", False),
        ("trainhook (SQLite)", "real_app:create", True),
    ):
        key = app.split(":")[0]
        with uvicorn_server(app, env, work / f"{key}.log", factory=factory) as base:
            url = base + URL_PATH
            smoke(url, body, headers, f"{key}-smoke-{pid}")
            warm = loadgen.run(url, args.connections, args.threads, args.warmup, f"{key}-w{pid}")
            result = loadgen.run(
                url, args.connections, args.threads, args.duration, f"{key}-m{pid}"
            )
        results[label] = result
        answered_202[key] = 1 + warm.accepted + result.accepted
        warmup_errors += warm.errors
        if warm.errors:
            print(f"  {label}: {warm.errors} failed requests during warm-up")
        print(f"  {label}: {result.rps:,.0f} req/s measured")

    bare, real = results["bare (HMAC only)"], results["trainhook (SQLite)"]
    ratio = real.rps / bare.rps if bare.rps else 0.0
    print()
    print("| route | req/s | p50 ms | p99 ms | max ms | non-202 | socket errors |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for label, r in results.items():
        print(
            f"| {label} | {r.rps:,.0f} | {r.p50_ms:.1f} | {r.p99_ms:.1f} | {r.max_ms:.1f} "
            f"| {r.rejected} | {r.socket_errors} |"
        )
    print()
    verdict_ratio = "PASS" if ratio >= TARGET_RATIO else "MISS"
    verdict_p99 = "PASS" if real.p99_ms <= TARGET_P99_MS else "MISS"
    print(f"ratio real/bare: {ratio:.2f}x  (target >= {TARGET_RATIO:.2f}x)  {verdict_ratio}")
    print(f"real p99: {real.p99_ms:.1f} ms  (target <= {TARGET_P99_MS:g} ms)  {verdict_p99}")
    if verdict_p99 == "MISS":
        # Closed loop: every connection waits for its answer, so mean latency is
        # connections / throughput (Little's law) whatever the server does.
        needed = args.connections / (TARGET_P99_MS / 1000)
        print(
            f"  closed loop: mean latency = connections / throughput = "
            f"{args.connections / real.rps * 1000 if real.rps else 0:.0f} ms here; a p99 of "
            f"{TARGET_P99_MS:g} ms at {args.connections} connections needs more than "
            f"{needed:,.0f} req/s (the bare route did {bare.rps:,.0f})"
        )

    rows = count_rows(db_url)
    seen = answered_202["real_app"]
    # wrk stops with up to one request per connection in flight: the server may still
    # record those after the client has gone, so builds can exceed the 202s seen by that much.
    in_flight = rows["builds"] - seen
    consistent = (
        0 <= in_flight <= 2 * args.connections
        and rows["deliveries"] == rows["builds"] == rows["jobs"]
        and rows["stage_events"] == 3 * rows["builds"]
    )
    print(
        f"database: {rows['builds']} builds, {rows['deliveries']} deliveries, {rows['jobs']} jobs,"
        f" {rows['stage_events']} stage events; 202 answers seen: {seen}"
        f" (recorded while in flight at stop: {in_flight})  {'OK' if consistent else 'MISMATCH'}"
    )
    errors = sum(r.errors for r in results.values()) + warmup_errors
    if errors or not consistent:
        print(f"INVALID RUN: {errors} failed requests; database consistent: {consistent}")
        return 1
    print(f"run finished {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC, no errors")
    return 0


if __name__ == "__main__":
    sys.exit(main())

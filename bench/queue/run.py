"""Queue benchmark: signed pushes → webhook → queue → worker, SQL queue vs Pub/Sub + outbox.

    uv run python bench/queue/run.py [--pushes 500] [--workers 2] [--concurrency 8]
                                     [--branches 20] [--json FILE]

For each queue, in the same run and on the same fresh PostgreSQL database server: start
`trainhook serve` (a process, as in production; with Pub/Sub it runs the outbox sweeper) and
`--workers` worker processes whose pipeline is empty (claim, mark started, finish, settle);
post `--pushes` signed GitHub pushes over `--branches` branches (one Pub/Sub ordering key
each) with `--concurrency` requests in flight; wait until every build succeeded. Reports
webhook answers per second, end-to-end jobs per second (first POST to last build finished)
and the latency from each 202 to its worker starting the build (builds.started_at), p50/p99.
Pub/Sub is the official emulator on loopback; PostgreSQL a throwaway cluster.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from service.forges.github import signature  # noqa: E402
from tests.support.postgres import PostgresServer, find_pg_bin, free_port  # noqa: E402
from tests.support.pubsub import PubSubEmulator, find_emulator  # noqa: E402
from trainhook.db import upgrade  # noqa: E402
from trainhook.models import builds, jobs  # noqa: E402

SECRET = "bench-secret"
REPO = "octo-org/social-score-api"
TOML = (
    f'[[repos]]\nname = "{REPO}"\nprovider = "github"\n'
    f'clone_url = "https://github.com/{REPO}.git"\nbranches = ["*"]\nsecret_env = "BENCH_SECRET"\n'
)


def push(i: int, branches: int) -> tuple[bytes, dict[str, str]]:
    body = json.dumps(
        {
            "ref": f"refs/heads/b{i % branches}",
            "before": "0" * 40,
            "created": False,
            "deleted": False,
            "forced": False,
            "after": f"{i:040x}",
            "commits": [],
            "head_commit": {"id": f"{i:040x}", "message": "bench", "author": {"name": "b"}},
            "repository": {"full_name": REPO, "clone_url": "https://example.invalid/x.git"},
        }
    ).encode()
    headers = {
        "Content-Type": "application/json",
        "X-GitHub-Event": "push",
        "X-GitHub-Delivery": str(uuid.uuid4()),
        "X-GitHub-Hook-ID": "1",
        "X-Hub-Signature-256": signature(SECRET, body),
    }
    return body, headers


async def post_all(base: str, first: int, count: int, args: argparse.Namespace) -> dict[int, float]:
    """Post pushes first..first+count-1; returns build id -> wall time of its 202."""
    answered: dict[int, float] = {}
    sem = asyncio.Semaphore(args.concurrency)
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:

        async def one(i: int) -> None:
            body, headers = push(i, args.branches)
            async with sem:
                response = await client.post("/webhooks/github", content=body, headers=headers)
            if response.status_code != 202:
                raise SystemExit(f"push {i}: {response.status_code} {response.text}")
            answered[response.json()["build_id"]] = time.time()

        await asyncio.gather(*(one(i) for i in range(first, first + count)))
    return answered


def wait_done(engine: sa.Engine, ids: list[int], timeout: float = 300) -> list[Any]:
    deadline = time.monotonic() + timeout
    query = sa.select(
        builds.c.id, builds.c.status, builds.c.started_at, builds.c.finished_at,
        jobs.c.published_at,
    ).join(jobs, jobs.c.build_id == builds.c.id)  # fmt: skip
    while True:
        with engine.connect() as conn:
            rows = conn.execute(query.where(builds.c.id.in_(ids))).all()
        if sum(r.status == "succeeded" for r in rows) == len(ids):
            return rows
        if time.monotonic() > deadline:
            raise SystemExit(f"only {sum(r.status == 'succeeded' for r in rows)}/{len(ids)} ran")
        time.sleep(0.05)


def run_queue(kind: str, pg: PostgresServer, emulator: PubSubEmulator | None, args, tmp: Path):
    name = f"bench_{kind}_{uuid.uuid4().hex[:6]}"
    admin = sa.create_engine(pg.url(), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE {name}")
    admin.dispose()
    url = pg.url(name)
    upgrade(url)
    (tmp / "trainhook.toml").write_text(TOML)
    env = {
        **os.environ,
        "TRAINHOOK_HOME": str(tmp / kind),
        "TRAINHOOK_CONFIG": str(tmp / "trainhook.toml"),
        "TRAINHOOK_DATABASE_URL": url,
        "TRAINHOOK_QUEUE": "sql" if kind == "sql" else "pubsub",
        "BENCH_SECRET": SECRET,
    }
    if emulator is not None:
        tag = uuid.uuid4().hex[:8]
        env.update(
            PUBSUB_EMULATOR_HOST=emulator.host,
            TRAINHOOK_PUBSUB_PROJECT="trainhook-bench",
            TRAINHOOK_PUBSUB_TOPIC=f"jobs-{tag}",
            TRAINHOOK_PUBSUB_SUBSCRIPTION=f"work-{tag}",
        )
        subprocess.run([sys.executable, "-m", "trainhook.cli", "setup-pubsub"], env=env,
                       check=True, capture_output=True)  # fmt: skip
    port = free_port()
    procs = [
        subprocess.Popen([sys.executable, "-m", "trainhook.cli", "serve", "--port", str(port)],
                         env=env, stdout=subprocess.DEVNULL,
                         stderr=(tmp / f"serve-{kind}.log").open("w"))
    ] + [
        subprocess.Popen([sys.executable, str(ROOT / "bench/queue/worker.py")], env=env)
        for _ in range(args.workers)
    ]  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    engine = sa.create_engine(url)
    try:
        for _ in range(300):
            try:
                if httpx.get(f"{base}/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        warm = asyncio.run(post_all(base, 10**6, 20, args))
        wait_done(engine, list(warm))
        started = time.time()
        answered = asyncio.run(post_all(base, 0, args.pushes, args))
        posted = time.time()
        rows = wait_done(engine, list(answered))
        paced: dict[int, float] = {}
        for i in range(args.paced):  # one at a time, the queue idle in between
            paced.update(asyncio.run(post_all(base, 10**7 + i, 1, args)))
            time.sleep(1 / args.rate)
        paced_rows = wait_done(engine, list(paced))
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            proc.wait(timeout=60)
        engine.dispose()
    last = max(stamp(r.finished_at) for r in rows)
    burst = millis([stamp(r.started_at) - answered[r.id] for r in rows])
    idle = millis([stamp(r.started_at) - paced[r.id] for r in paced_rows])
    published = millis([stamp(r.published_at) - paced[r.id] for r in paced_rows if r.published_at])
    return {
        "queue": kind,
        "pushes": args.pushes,
        "webhooks_per_s": round(args.pushes / (posted - started), 1),
        "jobs_per_s": round(args.pushes / (last - started), 1),
        "burst_start_p50_ms": pct(burst, 0.5),
        "burst_start_p99_ms": pct(burst, 0.99),
        "paced": args.paced,
        "start_p50_ms": pct(idle, 0.5),
        "start_p99_ms": pct(idle, 0.99),
        "published_p50_ms": pct(published, 0.5) if published else None,
        "published_p99_ms": pct(published, 0.99) if published else None,
    }


def stamp(value: datetime) -> float:
    return value.replace(tzinfo=UTC).timestamp()


def millis(seconds: list[float]) -> list[float]:
    return sorted(s * 1000 for s in seconds)


def pct(values: list[float], q: float) -> float:
    return round(values[min(len(values) - 1, int(len(values) * q))], 1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pushes", type=int, default=500)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--branches", type=int, default=20)
    parser.add_argument("--paced", type=int, default=50, help="pushes sent one at a time")
    parser.add_argument("--rate", type=float, default=4.0, help="paced pushes per second")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    launcher, why = find_emulator()
    if launcher is None or find_pg_bin() is None:
        print(f"needs PostgreSQL and the Pub/Sub emulator: {why or 'initdb not found'}")
        return 2
    tmp = Path(os.environ.get("TMPDIR", "/tmp")) / f"trainhook-bench-queue-{os.getpid()}"
    tmp.mkdir(parents=True)
    pg = PostgresServer().start()
    emulator = PubSubEmulator(launcher).start()
    results = []
    try:
        for kind in ("sql", "pubsub"):
            results.append(run_queue(kind, pg, emulator if kind == "pubsub" else None, args, tmp))
            print(json.dumps(results[-1]), flush=True)
    finally:
        emulator.stop()
        pg.destroy()
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"\n{datetime.now(UTC):%Y-%m-%d}, {os.cpu_count()} cores, {args.workers} workers, "
          f"{args.pushes} pushes in a burst ({args.concurrency} in flight, {args.branches} "
          f"branches), then {args.paced} paced at {args.rate}/s\n")  # fmt: skip
    print(
        "| queue | webhooks/s | jobs/s end to end | 202 → start p50 / p99 (burst) "
        "| 202 → start p50 / p99 (paced) | 202 → published p50 |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for r in results:
        print(f"| {r['queue']} | {r['webhooks_per_s']} | {r['jobs_per_s']} | "
              f"{r['burst_start_p50_ms']} / {r['burst_start_p99_ms']} ms | "
              f"{r['start_p50_ms']} / {r['start_p99_ms']} ms | "
              f"{r['published_p50_ms'] or '-'} ms |")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Status page benchmark: GET / and friends with 10,000 builds in the database.

    uv run python bench/status/run.py [--builds 10000] [--requests 300] [--json FILE]

Fills a fresh SQLite database (migrated by Alembic, so with the real indexes) with `--builds`
builds over three repositories and four branches, each with the 20 stage events of ten stages
(running + final, with cache results and details as the worker writes them) and a few log
chunks; then serves the real app under uvicorn on a free loopback port and times sequential
requests over one keep-alive connection (after a warm-up). Prints p50/p99 per page, the ratio
of p99 to the 100 ms target, and the SQL statements one GET / runs (two: builds, then events).
Then opens `--tabs` live build pages (event streams) at once on a running build: counts the
SELECTs in 5 idle seconds (one poller: one query per tick, not one per tab) and times one new
stage event to every tab. Exit status 1 when GET / misses the target or runs more than two
queries.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa
import uvicorn

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from service.app import create_app  # noqa: E402
from trainhook.builds import STAGES, add_event  # noqa: E402
from trainhook.db import make_engine, upgrade  # noqa: E402
from trainhook.models import builds, stage_events, stage_logs  # noqa: E402
from trainhook.runtime import build_runtime  # noqa: E402
from trainhook.settings import load_settings  # noqa: E402

TARGET_MS = 100.0
REPOS = ("octo-org/social-score-api", "octo-org/churn-model", "lab/sentiment")
BRANCHES = ("main", "main", "main", "dev", "release/2.0", "feature/rare")
TOML = "".join(
    f'[[repos]]\nname = "{r}"\nprovider = "github"\nclone_url = "https://github.com/{r}.git"\n'
    f'branches = ["*"]\nsecret_env = "BENCH_SECRET"\n\n'
    for r in REPOS
)


def fill(engine: sa.Engine, count: int, seed: int = 7) -> None:
    """`count` builds with ten stages of events each, inserted in large batches."""
    rnd = random.Random(seed)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    build_rows, event_rows, log_rows = [], [], []
    for i in range(1, count + 1):
        created = start + timedelta(minutes=7 * i)
        branch = "feature/rare" if i % 997 == 0 else rnd.choice(BRANCHES[:-1])
        status = "running" if i > count - 3 else rnd.choices(["succeeded", "failed"], [9, 1])[0]
        hit = rnd.random() < 0.6
        t = created
        events = []
        for n, stage in enumerate(STAGES):
            seconds = {"train": 0.4 if hit else rnd.uniform(40, 90), "build": 12.0}.get(stage, 1.5)
            end = t + timedelta(seconds=seconds)
            final = "running" if status == "running" and n >= 5 else "succeeded"
            cache = ("hit" if hit else "miss") if stage == "train" else None
            detail = {
                "hash": "data data/train.csv git:0d1c2b3a; keys model 3f2a deps 11aa nltk 33bb",
                "train": f"model cache hit: key 3f2a produced by build #{max(i - 1, 1)}; "
                "macro F1 0.812; gate: no regression"
                if hit
                else "trained (cache miss), stored as key 3f2a; macro F1 0.790; gate: first",
            }.get(stage)
            events.append((stage, "running", t, None, None))
            if final != "running":
                events.append((stage, final, end, cache, detail))
            t = end
            if final == "running":
                break
        build_rows.append(
            {
                "id": i,
                "provider": "github",
                "repo": REPOS[i % len(REPOS)],
                "ref": f"refs/heads/{branch}",
                "sha": f"{i:040x}",
                "trigger": "push",
                "status": status,
                "force": False,
                "commit_message": f"Commit {i}: retrain <b>on</b> fresh data\n\nbody",
                "author": "Octo Cat",
                "created_at": created,
                "started_at": created,
                "finished_at": None if status == "running" else t,
                "cache_key": "3f2a" * 16,
            }
        )
        for stage, st, at, cache, detail in events:
            event_rows.append(
                {"build_id": i, "stage": stage, "status": st, "at": at, "cache": cache,
                 "detail": detail}
            )  # fmt: skip
        log_rows.append({"build_id": i, "stage": "train", "at": t, "text": "epoch 1\nepoch 2\n"})
        if len(event_rows) > 50_000 or i == count:
            with engine.begin() as conn:
                conn.execute(builds.insert(), build_rows)
                conn.execute(stage_events.insert(), event_rows)
                conn.execute(stage_logs.insert(), log_rows)
            build_rows, event_rows, log_rows = [], [], []


def percentile(values: list[float], q: float) -> float:
    data = sorted(values)
    pos = (len(data) - 1) * q
    low = int(pos)
    high = min(low + 1, len(data) - 1)
    return data[low] + (data[high] - data[low]) * (pos - low)


def time_requests(client: httpx.Client, path: str, count: int) -> list[float]:
    for _ in range(10):
        assert client.get(path).status_code == 200, path
    times = []
    for _ in range(count):
        t0 = time.perf_counter()
        response = client.get(path)
        times.append((time.perf_counter() - t0) * 1000)
        assert response.status_code == 200, (path, response.status_code)
    return times


async def open_tabs(base: str, engine: sa.Engine, build_id: int, tabs: int) -> dict[str, float]:
    """`tabs` live build pages (event streams) on one running build: the SELECTs the server
    runs in 5 idle seconds, and how long one new stage event takes to reach every tab."""
    limits = httpx.Limits(max_connections=tabs + 8)
    arrived: list[float] = []
    ready = asyncio.Event()
    connected = 0

    async def tab(client: httpx.AsyncClient) -> None:
        nonlocal connected
        async with client.stream("GET", f"/events?build={build_id}&since=0.0") as response:
            connected += 1
            if connected == tabs:
                ready.set()
            async for line in response.aiter_lines():
                if line.startswith("data:") and '"stage":"push"' in line:
                    arrived.append(time.perf_counter())
                    return

    async with httpx.AsyncClient(base_url=base, timeout=60, limits=limits) as client:
        tasks = [asyncio.create_task(tab(client)) for _ in range(tabs)]
        await asyncio.wait_for(ready.wait(), 30)
        await asyncio.sleep(1.0)  # the catch-up of every tab is done
        selects: list[str] = []

        def listener(conn: Any, cursor: Any, statement: str, *rest: Any) -> None:
            if statement.lstrip().upper().startswith("SELECT"):
                selects.append(statement)

        sa.event.listen(engine, "before_cursor_execute", listener)
        await asyncio.sleep(5.0)
        sa.event.remove(engine, "before_cursor_execute", listener)
        committed = time.perf_counter()
        with engine.begin() as conn:
            add_event(conn, build_id, "push", "running")
        await asyncio.wait_for(asyncio.gather(*tasks), 30)
    return {
        "tabs": tabs,
        "selects_in_5s": len(selects),
        "fanout_p50_ms": round(percentile([(t - committed) * 1000 for t in arrived], 0.5), 1),
        "fanout_max_ms": round(max(t - committed for t in arrived) * 1000, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--builds", type=int, default=10_000)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--tabs", type=int, default=200, help="live pages open at once")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)

    home = Path(tempfile.mkdtemp(prefix="trainhook-status-bench-"))
    (home / "trainhook.toml").write_text(TOML)
    url = f"sqlite:///{home / 'trainhook.db'}"
    upgrade(url)
    engine = make_engine(url)
    t0 = time.perf_counter()
    fill(engine, args.builds)
    with engine.connect() as conn:
        n_events = conn.execute(sa.select(sa.func.count()).select_from(stage_events)).scalar()
    took = time.perf_counter() - t0
    print(f"filled {args.builds} builds, {n_events} stage events in {took:.1f}s")

    settings = load_settings(
        {"TRAINHOOK_HOME": str(home), "TRAINHOOK_CONFIG": str(home / "trainhook.toml"),
         "TRAINHOOK_DATABASE_URL": url}
    )  # fmt: skip
    runtime = build_runtime(settings, engine)
    statements: list[str] = []
    # Port 0 through uvicorn's own bind, as `trainhook serve` does (a socket made here and
    # passed in would lack TCP_NODELAY: Nagle + delayed ACK would add ~40 ms to answers).
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(runtime), host="127.0.0.1", port=0, log_level="warning", access_log=False
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    base = f"http://127.0.0.1:{port}"

    pages = {
        "GET / (newest 50)": "/",
        "GET /?repo=R": f"/?repo={REPOS[1]}",
        "GET /?branch=feature/rare": "/?branch=feature/rare",
        "GET /?status=failed": "/?status=failed",
        "GET /?before=5000 (page deep in history)": "/?before=5000",
        "GET /builds/{id}": f"/builds/{args.builds // 2}",
        "GET /repos/R/history": f"/repos/{REPOS[1]}/history",
        "GET /api/builds": "/api/builds",
    }
    results: dict[str, dict[str, Any]] = {}
    with httpx.Client(base_url=base, timeout=30) as client:

        def listener(conn: Any, cursor: Any, statement: str, *rest: Any) -> None:
            statements.append(statement)

        sa.event.listen(engine, "before_cursor_execute", listener)
        client.get("/")
        sa.event.remove(engine, "before_cursor_execute", listener)
        for name, path in pages.items():
            times = time_requests(client, path, args.requests)
            p50, p99 = percentile(times, 0.5), percentile(times, 0.99)
            results[name] = {"path": path, "p50_ms": round(p50, 2), "p99_ms": round(p99, 2),
                             "ratio_p99_to_target": round(p99 / TARGET_MS, 3)}  # fmt: skip
    live = asyncio.run(open_tabs(base, engine, args.builds, args.tabs)) if args.tabs else None
    server.should_exit = True
    thread.join(timeout=10)

    queries = [s for s in statements if s.lstrip().upper().startswith("SELECT")]
    print(f"\n{args.requests} sequential requests per page, one keep-alive connection, "
          f"target {TARGET_MS:.0f} ms\n")  # fmt: skip
    print("| page | p50 ms | p99 ms | p99 / target |")
    print("|---|---:|---:|---:|")
    for name, r in results.items():
        ratio = r["ratio_p99_to_target"]
        print(f"| {name} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {ratio:.2f} |")
    print(f"\nGET / ran {len(queries)} SELECT statements:")
    for q in queries:
        print("  " + " ".join(q.split())[:110] + " …")
    if live:
        print(
            f"\n{live['tabs']} build pages open on a running build: {live['selects_in_5s']} "
            f"SELECTs in 5 idle seconds (one poller, one query per tick); a new stage event "
            f"reached every page in {live['fanout_max_ms']:.0f} ms "
            f"(p50 {live['fanout_p50_ms']:.0f} ms)"
        )
    main_page = results["GET / (newest 50)"]
    ok = main_page["p99_ms"] <= TARGET_MS and len(queries) == 2
    verdict = "PASS" if ok else "FAIL"
    p99 = main_page["p99_ms"]
    print(f"\nverdict: {verdict} (GET / p99 {p99:.1f} ms = {p99 / TARGET_MS:.2f}x the target)")
    if args.json:
        report = {"builds": args.builds, "results": results, "live": live}
        args.json.write_text(json.dumps(report, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

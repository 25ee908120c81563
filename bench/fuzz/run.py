"""Receiver fuzzing: generated and mutated webhook requests straight into the real app.

    uv run python bench/fuzz/run.py [--count 100000] [--providers github,gitlab,gitea,forgejo]
                                    [--seed 0] [--batch 64] [--pool 2000] [--jobs 1]

Per route, `--count` requests made from Hypothesis-drawn values and from mutations of the
published payloads in ../shared/fixtures/webhooks (skipped, and said so, when that folder is
absent), signed well or badly, with mutated headers; about half carry a valid signature over
their mutated body. They go into the real ASGI app in-process (create_app over a runtime on a
SQLite file in a temporary directory), 64 in flight at a time: by default every route through
one app, in turn; with `--jobs N`, N routes at once, each in a process of its own. The generator
and the checks are in tests/reliability/fuzz_support.py, shared with
tests/reliability/test_fuzz_receivers.py.

Prints per route: requests, answers by status code, valid-signature requests, rows stored,
5xx answers, seconds (wall and CPU) and requests per second. Exit status 1 on any violation
(an answer outside the contract, a 5xx, a 2xx without a valid signature, a row no answer
accounts for, a build without its delivery, job or stage events), with a reproducer of the
first: the route, the headers and the body.
"""

from __future__ import annotations

import argparse
import multiprocessing
import sys
import tempfile
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # the generator lives with the tests that share it
# The payload builders import Starlette's test client, which warns about httpx on import (the
# test suite silences the same warning in pyproject.toml).
warnings.filterwarnings("ignore", message="Using .httpx. with .starlette.testclient")

from tests.reliability.fuzz_support import (  # noqa: E402
    FIXTURES,
    PROVIDERS,
    Harness,
    Pools,
    Stats,
    draw_pools,
    fuzz,
    fuzz_alone,
    load_fixtures,
)

CODES = (200, 202, 400, 401, 404, 413, 503)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=100_000, help="requests per route")
    parser.add_argument("--providers", default=",".join(PROVIDERS), help="routes, comma-separated")
    parser.add_argument("--seed", type=int, default=0, help="same seed, same requests")
    parser.add_argument("--batch", type=int, default=64, help="requests in flight at once")
    parser.add_argument("--pool", type=int, default=2000, help="values drawn per strategy")
    parser.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="routes fuzzed at once, each in its own process with its own app and SQLite "
        "file (default 1: every route through one app)",
    )
    args = parser.parse_args(argv)
    unknown = set(args.providers.split(",")) - set(PROVIDERS)
    if unknown:
        parser.error(f"unknown providers {sorted(unknown)}: choose among {PROVIDERS}")
    if args.jobs < 1:
        parser.error("--jobs must be at least 1")
    return args


def row(stats: Stats) -> str:
    codes = " ".join(f"{stats.statuses.get(code, 0):>7,}" for code in CODES)
    other = sum(n for code, n in stats.statuses.items() if code not in CODES)
    rows = "/".join(f"{stats.rows[t]:,}" for t in ("deliveries", "builds", "jobs"))
    rate = stats.requests / stats.seconds if stats.seconds else 0.0
    return (
        f"{stats.provider:<8} {stats.requests:>8,} {stats.signed:>8,} {codes} {other:>6,}"
        f" {stats.server_errors:>4,} {rows:>22} {stats.seconds:>7.1f} {stats.cpu_seconds:>7.1f}"
        f" {rate:>7,.0f}"
    )


HEADER = (
    f"{'route':<8} {'requests':>8} {'signed':>8} "
    + " ".join(f"{code:>7}" for code in CODES)
    + f" {'other':>6} {'5xx':>4} {'rows deliv/builds/jobs':>22} {'wall s':>7} {'cpu s':>7}"
    f" {'req/s':>7}"
)


def run_in_one_app(args: argparse.Namespace, providers: list[str], pools: Pools) -> list[Stats]:
    """Every route in turn through ONE app and database, as the test suite runs them."""
    fixtures = {p: load_fixtures(p) for p in providers}
    done = []
    with tempfile.TemporaryDirectory(prefix="trainhook-fuzz-") as workdir:
        harness = Harness(Path(workdir), fixtures)
        try:
            for provider in providers:
                stats = fuzz(
                    harness,
                    provider,
                    args.count,
                    pools,
                    seed=args.seed,
                    fixtures=fixtures[provider],
                    batch=args.batch,
                )
                print(row(stats), flush=True)
                done.append(stats)
            done[-1].violations += harness.finish()
        finally:
            harness.close()
    return done


def run_side_by_side(args: argparse.Namespace, providers: list[str], pools: Pools) -> list[Stats]:
    """One process per route, `--jobs` at a time: each its own app and SQLite file."""
    context = multiprocessing.get_context("spawn")  # no fork of a process holding threads
    with ProcessPoolExecutor(max_workers=args.jobs, mp_context=context) as pool:
        futures = [
            pool.submit(fuzz_alone, p, args.count, pools, args.seed, args.batch) for p in providers
        ]
        done = []
        for future in futures:
            stats = future.result()
            print(row(stats), flush=True)
            done.append(stats)
    return done


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    providers = args.providers.split(",")
    started = time.perf_counter()
    pools = draw_pools(args.pool, args.seed)
    print(
        f"pools: {args.pool} Hypothesis examples per strategy, seed {args.seed}, "
        f"{time.perf_counter() - started:.1f} s"
    )
    fixtures = {p: load_fixtures(p) for p in providers}
    if any(fixtures.values()):
        names = ", ".join(f"{p}: {len(fixtures[p])}" for p in providers)
        print(f"published payloads mutated too ({names})")
    else:
        print(
            f"../{FIXTURES.relative_to(ROOT.parent)} is absent: fixture mutations skipped, "
            "generated requests only"
        )
    how = "one app, one SQLite file" if args.jobs == 1 else f"{args.jobs} processes"
    print(f"{args.count:,} requests per route, {args.batch} in flight, {how}")
    print(HEADER)
    begun = time.perf_counter()
    if args.jobs == 1:
        done = run_in_one_app(args, providers, pools)
    else:
        done = run_side_by_side(args, providers, pools)
    wall = time.perf_counter() - begun
    total = sum(s.requests for s in done)
    cpu = sum(s.cpu_seconds for s in done)
    print(
        f"total: {total:,} requests in {wall:.1f} s wall ({total / wall:,.0f} req/s), "
        f"{cpu:.1f} s CPU; pools and start-up excluded"
    )
    violations = [v for s in done for v in s.violations]
    for stats in done:
        if stats.violations:
            print(f"{len(stats.violations)} violations on /webhooks/{stats.provider}")
    if violations:
        print(violations[0].report())
        return 1
    print(
        "no violation: every answer in the contract, no 5xx, no row without a valid "
        "signature, no half-written delivery"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

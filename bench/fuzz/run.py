"""Receiver fuzzing: generated and mutated webhook requests straight into the real app.

    uv run python bench/fuzz/run.py [--count 100000] [--providers github,gitlab,gitea,forgejo]
                                    [--seed 0] [--batch 64] [--pool 2000]

Per route, `--count` requests made from Hypothesis-drawn values and from mutations of the
published payloads in ../shared/fixtures/webhooks (skipped, and said so, when that folder is
absent), signed well or badly, with mutated headers; about half carry a valid signature over
their mutated body. They go into the real ASGI app in-process (create_app over a runtime on a
SQLite file in a temporary directory), 64 in flight at a time. The generator and the checks
are in tests/reliability/fuzz_support.py, shared with tests/reliability/test_fuzz_receivers.py.

Prints per route: requests, answers by status code, valid-signature requests, rows stored,
5xx answers, seconds (wall and CPU) and requests per second. Exit status 1 on any violation
(an answer outside the contract, a 5xx, a 2xx without a valid signature, a row no answer
accounts for, a build without its delivery, job or stage events), with a reproducer of the
first: the route, the headers and the body.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # the generator lives with the tests that share it

from tests.reliability.fuzz_support import (  # noqa: E402
    FIXTURES,
    PROVIDERS,
    Harness,
    Stats,
    Violation,
    draw_pools,
    fuzz,
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
    args = parser.parse_args(argv)
    unknown = set(args.providers.split(",")) - set(PROVIDERS)
    if unknown:
        parser.error(f"unknown providers {sorted(unknown)}: choose among {PROVIDERS}")
    return args


def row(stats: Stats, cpu: float) -> str:
    codes = " ".join(f"{stats.statuses.get(code, 0):>7,}" for code in CODES)
    other = sum(n for code, n in stats.statuses.items() if code not in CODES)
    rows = "/".join(f"{stats.rows[t]:,}" for t in ("deliveries", "builds", "jobs"))
    rate = stats.requests / stats.seconds if stats.seconds else 0.0
    return (
        f"{stats.provider:<8} {stats.requests:>8,} {stats.signed:>8,} {codes} {other:>6,}"
        f" {stats.server_errors:>4,} {rows:>22} {stats.seconds:>7.1f} {cpu:>7.1f} {rate:>7,.0f}"
    )


HEADER = (
    f"{'route':<8} {'requests':>8} {'signed':>8} "
    + " ".join(f"{code:>7}" for code in CODES)
    + f" {'other':>6} {'5xx':>4} {'rows deliv/builds/jobs':>22} {'wall s':>7} {'cpu s':>7}"
    f" {'req/s':>7}"
)


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
        names = sorted({f"{p}: {len(f)}" for p, f in fixtures.items()})
        print(f"published payloads mutated too ({', '.join(names)})")
    else:
        print(
            f"{FIXTURES.relative_to(ROOT.parent)} is absent: fixture mutations skipped, "
            "generated requests only"
        )
    print(HEADER)
    first: Violation | None = None
    total, total_seconds = 0, 0.0
    with tempfile.TemporaryDirectory(prefix="trainhook-fuzz-") as workdir:
        harness = Harness(Path(workdir), fixtures)
        try:
            for provider in providers:
                cpu = time.process_time()
                stats = fuzz(
                    harness,
                    provider,
                    args.count,
                    pools,
                    seed=args.seed,
                    fixtures=fixtures[provider],
                    batch=args.batch,
                )
                print(row(stats, time.process_time() - cpu), flush=True)
                total += stats.requests
                total_seconds += stats.seconds
                if stats.violations:
                    print(f"  {len(stats.violations)} violations on /webhooks/{provider}")
                    first = first or stats.violations[0]
            final = harness.finish()
            first = first or (final[0] if final else None)
        finally:
            harness.close()
    print(
        f"total: {total:,} requests in {total_seconds:.1f} s "
        f"({total / total_seconds:,.0f} req/s), pools and setup excluded"
    )
    if first is not None:
        print(first.report())
        return 1
    print(
        "no violation: every answer in the contract, no 5xx, no row without a valid "
        "signature, no half-written delivery"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

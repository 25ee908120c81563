"""Where one delivery's time goes: verify + record in-process, one thread, no HTTP, no contention.

    uv run python bench/ingest/profile_record.py [--count 3000] [--top 25]

Same body, settings and SQLite database as run.py; prints the cost per delivery of
`ingest.verify` and of recording it in batches of `--batch` (what the group-commit writer
does), and a cProfile listing of the recording (cumulative time).
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import shutil
import tempfile
import time
from pathlib import Path

from run import REPO_TOML, SECRET, SECRET_ENV, signed_request

from service import ingest
from service.intake import Incoming, record_deliveries
from service.webhooks import FORGES
from trainhook.db import upgrade
from trainhook.models import utcnow
from trainhook.runtime import build_runtime
from trainhook.settings import load_settings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--count", type=int, default=3000)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--batch", type=int, default=32, help="deliveries per transaction")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="trainhook-bench-profile-"))
    try:
        (work / "trainhook.toml").write_text(REPO_TOML)
        url = f"sqlite:///{work / 'trainhook.db'}"
        upgrade(url)
        settings = load_settings(
            {
                "TRAINHOOK_HOME": str(work),
                "TRAINHOOK_CONFIG": str(work / "trainhook.toml"),
                "TRAINHOOK_DATABASE_URL": url,
                SECRET_ENV: SECRET,
            }
        )
        runtime = build_runtime(settings)
        forge = FORGES["github"]
        body, sent = signed_request()
        base = {k.lower(): v for k, v in sent.items()}

        def headers(tag: str, n: int) -> dict[str, str]:
            return {**base, "x-github-delivery": f"{tag}-{n}"}

        def store(items: list[Incoming]) -> None:
            for i in range(0, len(items), args.batch):
                with runtime.engine.begin() as conn:
                    record_deliveries(conn, items[i : i + args.batch])

        warm = []
        for n in range(200):  # warm caches (compiled statements, pool)
            repo, event = ingest.verify(runtime, forge, headers("warm", n), body)
            warm.append(ingest.incoming(forge, repo, event, headers("warm", n), body, utcnow()))
        store(warm)

        verified = []
        t0 = time.perf_counter()
        for n in range(args.count):
            h = headers("run", n)
            verified.append((h, *ingest.verify(runtime, forge, h, body)))
        t1 = time.perf_counter()
        profiler = cProfile.Profile()
        profiler.enable()
        store([ingest.incoming(forge, r, e, h, body, utcnow()) for h, r, e in verified])
        profiler.disable()
        t2 = time.perf_counter()
        runtime.close()

        n = args.count
        print(f"verify: {(t1 - t0) / n * 1e6:.0f} us per delivery (signature + JSON parse)")
        print(f"record: {(t2 - t1) / n * 1e6:.0f} us per delivery under cProfile (one thread)")
        stats = pstats.Stats(profiler)
        stats.sort_stats("cumulative").print_stats(args.top)
        stats.sort_stats("tottime").print_stats(12)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

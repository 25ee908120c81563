"""Soak run: 10,000 signed GitHub push deliveries (20 % redeliveries) against the real
service, PostgreSQL and the Pub/Sub emulator while workers are killed with SIGKILL, the
emulator is restarted once and PostgreSQL is killed and started again once; then every
promise is checked. See bench/soak/soak.py for what runs and what is checked.

    uv run python bench/soak/run.py [--deliveries 10000] [--rate 15] [--workers 4] ...

Exit status: 0 when every promise held, 1 when one broke, 2 when PostgreSQL or the
emulator is missing.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import shutil
import signal
import sys
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.soak.soak import Missing, SoakConfig, run_soak


def optional(number: Callable[[str], float], text: str) -> float | None:
    return None if text.lower() == "none" else number(text)


def parse(argv: list[str] | None) -> tuple[SoakConfig, argparse.Namespace]:
    defaults = SoakConfig()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    for f in dataclasses.fields(SoakConfig):
        value = getattr(defaults, f.name)
        if f.name in ("max_kills", "emulator_restart_at", "postgres_restart_at"):
            number = int if f.name == "max_kills" else float
            kind: Callable[[str], object] = functools.partial(optional, number)
            what = "(none: never)" if f.name != "max_kills" else "(none: no limit)"
        else:
            kind, what = type(value), ""
        parser.add_argument("--" + f.name.replace("_", "-"), type=kind, default=value, help=what)
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    config = SoakConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(SoakConfig)})
    return config, args


def interrupted(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # so the processes started are stopped on the way out


def main(argv: list[str] | None = None) -> int:
    config, args = parse(argv)
    signal.signal(signal.SIGTERM, interrupted)
    work = Path(tempfile.mkdtemp(prefix="trainhook-soak-"))
    try:
        report = run_soak(config, work, say=lambda line: print(line, flush=True))
    except Missing as exc:
        print(f"soak not run: {exc}", file=sys.stderr)
        return 2
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    print()
    print(report.text())
    print(f"run finished {datetime.now(UTC):%Y-%m-%d %H:%M} UTC")
    if args.json:
        args.json.write_text(json.dumps(report.figures, indent=2))
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())

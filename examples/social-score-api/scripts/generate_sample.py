"""Generate data/cleaned_training_sample.csv with trainhook's own sample generator.

Requires trainhook's ``trainer`` package to be importable (e.g. run this with
trainhook's Python). Usage:

    python scripts/generate_sample.py [--rows 2000] [--seed 0] [--out PATH]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO_ROOT / "data" / "cleaned_training_sample.csv"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output CSV path")
    parser.add_argument("--rows", type=int, default=2000, help="number of rows")
    parser.add_argument("--seed", type=int, default=0, help="random seed")
    args = parser.parse_args(argv)

    args.out.parent.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable,
        "-m",
        "trainer",
        "sample",
        "--out",
        str(args.out),
        "--rows",
        str(args.rows),
        "--seed",
        str(args.seed),
    ]
    try:
        subprocess.run(cmd, check=True)
    except subprocess.CalledProcessError as exc:
        print(
            f"error: `python -m trainer sample` failed (exit {exc.returncode}); "
            "is trainhook's trainer package importable?",
            file=sys.stderr,
        )
        return exc.returncode or 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

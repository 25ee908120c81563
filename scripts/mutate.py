"""`make mutate`: run mutmut (configured in pyproject.toml) bounded for a shared machine, then
print killed / survived per module, the figures MUTATION.md records.

    python scripts/mutate.py                 # every configured module
    python scripts/mutate.py 'trainer.gate*' # only these mutants (mutmut's name globs)

Runs at low priority (nice 10) with TRAINHOOK_MUTATE_JOBS workers (default 1). Results are
kept in mutants/ and reused: an unchanged function is not mutated again.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections import Counter, defaultdict

KILLED = {"killed", "timeout", "segfault"}  # a mutant that made the tests fail, by any means


def results() -> dict[str, Counter[str]]:
    out = subprocess.run(
        [sys.executable, "-m", "mutmut", "results", "--all", "true"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    per_module: dict[str, Counter[str]] = defaultdict(Counter)
    for line in out.splitlines():
        match = re.match(r"\s*([\w.]+)\.x[_ǁ].*__mutmut_\d+: (.+)$", line)
        if match:
            per_module[match.group(1)][match.group(2).strip()] += 1
    return per_module


def table(per_module: dict[str, Counter[str]]) -> str:
    lines = [
        "| module | mutants | killed | survived | other | killed % |",
        "|---|---|---|---|---|---|",
    ]
    total: Counter[str] = Counter()
    for module in sorted(per_module):
        counts = per_module[module]
        total.update(counts)
        lines.append(_row(module, counts))
    lines.append(_row("**all**", total))
    return "\n".join(lines)


def _row(name: str, counts: Counter[str]) -> str:
    n = sum(counts.values())
    killed = sum(counts[k] for k in KILLED)
    survived = counts["survived"]
    other = n - killed - survived
    pct = f"{100 * killed / n:.1f}" if n else "-"
    return f"| {name} | {n} | {killed} | {survived} | {other} | {pct} |"


def main(argv: list[str]) -> int:
    jobs = os.environ.get("TRAINHOOK_MUTATE_JOBS", "1")
    run = ["nice", "-n", "10", sys.executable, "-m", "mutmut", "run", "--max-children", jobs]
    code = subprocess.run([*run, *argv]).returncode
    print(table(results()))
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

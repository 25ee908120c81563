"""The direction of imports: trainer is pure; core never imports service or worker."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# The composition root wires service and worker together; nothing else in core may.
COMPOSITION_ROOT = {"trainhook/cli/commands.py", "trainhook/cli.py"}
FORBIDDEN = {
    "trainer": {"trainhook", "service", "worker", "migrations", "sqlalchemy", "google"},
    "trainhook": {"service", "worker"},
    "service": {"worker"},
    "worker": {"service"},
}


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_imports_only_what_its_layer_allows(package: str):
    offenders = []
    for path in sorted((ROOT / package).rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        if rel in COMPOSITION_ROOT:
            continue
        bad = _imports(path) & FORBIDDEN[package]
        if bad:
            offenders.append(f"{rel} imports {sorted(bad)}")
    assert offenders == []

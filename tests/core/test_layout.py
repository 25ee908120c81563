"""The direction of imports and the absence of import cycles, checked on every import.

Every `import` counts: at module top, inside a function and under `TYPE_CHECKING`. An import
placed inside a function still couples the two modules (and hides a cycle from the reader),
so the layers and the cycle check see it like any other.

Layers, by package (no per-file exemptions):

    trainhook.cli        the composition root: the commands, wiring service and worker
    service   worker     the two sides; neither imports the other
    trainhook            the core both sides stand on (everything but trainhook.cli)
    migrations           the schema's history (reads the core's table definitions)
    trainer              the pure training library: nothing of ours but the runtime, no DB,
                         no GCP
    trainhook_runtime    what a served model loads: nothing of ours, and of third-party code
                         only numpy, scipy, scikit-learn, joblib and nltk (a served image has
                         only those)
"""

from __future__ import annotations

import ast
import sys
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("trainhook", "service", "worker", "trainer", "trainhook_runtime", "migrations")
COMPOSITION_ROOT = "trainhook.cli"

# What each layer must not import. A layer is matched by the longest prefix that names it.
FORBIDDEN: dict[str, tuple[str, ...]] = {
    COMPOSITION_ROOT: (),
    "trainhook": ("service", "worker", COMPOSITION_ROOT),
    "migrations": ("service", "worker", COMPOSITION_ROOT),
    "service": ("worker", COMPOSITION_ROOT),
    "worker": ("service", COMPOSITION_ROOT),
    "trainer": ("trainhook", "service", "worker", "migrations", "sqlalchemy", "google"),
    "trainhook_runtime": ("trainhook", "service", "worker", "trainer", "migrations"),
}
# The only third-party packages the runtime may import: what a served image installs.
RUNTIME_THIRD_PARTY = frozenset({"numpy", "scipy", "sklearn", "joblib", "nltk"})

# Import cycles that are allowed, each with its reason. Keep this list short: a cycle means
# neither module can be read, tested or moved without the other.
ALLOWED_CYCLES: dict[frozenset[str], str] = {}


@cache
def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = path
    return found


def _imported_names(path: Path) -> set[str]:
    """Every absolute module name `path` imports, wherever the import statement stands."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            # `from package import module` imports the module, not only the package.
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


@cache
def _graph() -> dict[str, frozenset[str]]:
    """Module -> the modules of ours it imports (a name is resolved to its longest module)."""
    modules = _modules()
    graph = {}
    for module, path in modules.items():
        targets = set()
        for name in _imported_names(path):
            while name and name not in modules:
                name = name.rpartition(".")[0]
            if name and name != module:
                targets.add(name)
        graph[module] = frozenset(targets)
    return graph


def _layer(module: str) -> str:
    return max((layer for layer in FORBIDDEN if _within(module, layer)), key=len)


def _within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def _cycles(graph: dict[str, frozenset[str]]) -> list[frozenset[str]]:
    """The strongly connected components of more than one module (Tarjan, iteratively)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[frozenset[str]] = []
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, targets = work[-1]
            for target in targets:
                if target not in index:
                    index[target] = low[target] = len(index)
                    stack.append(target)
                    on_stack.add(target)
                    work.append((target, iter(sorted(graph[target]))))
                    break
                if target in on_stack:
                    low[node] = min(low[node], index[target])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = set()
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.add(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(frozenset(component))
    return found


def _third_party(path: Path) -> set[str]:
    return {name.split(".")[0] for name in _imported_names(path)}


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_a_layer_imports_nothing_its_layer_forbids(layer: str):
    offenders = []
    for module, targets in sorted(_graph().items()):
        if _layer(module) != layer:
            continue
        bad = {t for t in targets if any(_within(t, f) for f in FORBIDDEN[layer])}
        bad |= _third_party(_modules()[module]) & set(FORBIDDEN[layer])
        if bad:
            offenders.append(f"{module} imports {sorted(bad)}")
    assert offenders == []


def test_the_runtime_imports_only_the_standard_library_and_the_serving_libraries():
    modules = _modules()
    outside = {
        module: sorted(found)
        for module, path in modules.items()
        if _within(module, "trainhook_runtime")
        and (
            found := _third_party(path)
            - set(sys.stdlib_module_names)
            - RUNTIME_THIRD_PARTY
            - {"trainhook_runtime"}
        )
    }
    assert any(_within(m, "trainhook_runtime") for m in modules)
    assert outside == {}


def test_no_module_is_part_of_an_import_cycle():
    cycles = [sorted(c) for c in _cycles(_graph()) if c not in ALLOWED_CYCLES]
    assert cycles == []


def test_every_allowed_cycle_still_exists_and_has_a_reason():
    present = set(_cycles(_graph()))
    assert [sorted(c) for c in ALLOWED_CYCLES if c not in present] == []
    assert all(reason.strip() for reason in ALLOWED_CYCLES.values())


def test_the_cycle_finder_reports_each_cycle_once_with_all_its_modules():
    graph = {"a": frozenset({"b"}), "b": frozenset({"c"}), "c": frozenset({"a"}), "d": frozenset()}
    assert _cycles(graph) == [frozenset({"a", "b", "c"})]


def test_imports_inside_functions_and_under_type_checking_count(tmp_path: Path):
    source = tmp_path / "m.py"
    source.write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from worker.context import BuildContext\n"
        "def f():\n    from service import app\n"
    )
    assert {"worker.context", "service.app"} <= _imported_names(source)

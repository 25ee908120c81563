"""The README's Configuration section is the one reference: every environment variable the
code reads and every key of the repositories file is in it, nothing else is, and each number's
default and range are the code's.

A variable or key added to the code without a line here fails these tests, naming it.
"""

from __future__ import annotations

import dataclasses
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest

from trainhook import notifyconfig
from trainhook.configcheck import Number, human_duration, human_size
from trainhook.deployconfig import DEPLOY_KEYS
from trainhook.repos import _REQUIRED, _TYPES, RepoConfig
from trainhook.sandboxsettings import LIMITS, SandboxLimits
from trainhook.settings import NUMBERS

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")
SECTION = README.split("\n## Configuration\n", 1)[1].split("\n## ", 1)[0]
# The processes' own code: what an operator can set.
SOURCES = ("trainhook", "service", "worker", "trainer", "trainhook_runtime")
# Read from an environment trainhook makes itself, never set by an operator.
NOT_SETTINGS = {"TRAINHOOK_BUILD": "the build number, inside the Vertex step of a Cloud Build"}
SANDBOX = {f"TRAINHOOK_SANDBOX_{name.upper()}": name for name in LIMITS}


def variables_read() -> set[str]:
    found: set[str] = set(SANDBOX)  # built from the limits' names
    for package in SOURCES:
        for path in (ROOT / package).rglob("*.py"):
            found |= set(re.findall(r"[\"'](TRAINHOOK_[A-Z0-9_]*[A-Z0-9])[\"']", path.read_text()))
    return found - set(NOT_SETTINGS)


def rows() -> dict[str, str]:
    """Each table row of the section by its variable."""
    out = {}
    for line in SECTION.splitlines():
        match = re.match(r"\| `(TRAINHOOK_[A-Z0-9_]+)`", line)
        if match:
            assert match.group(1) not in out, f"{match.group(1)} has two rows"
            out[match.group(1)] = line
    return out


def default_of(row: str) -> str | None:
    match = re.match(r"\| `[A-Z0-9_]+` \[`([^`]*)`\]", row)
    return match.group(1) if match else None


def range_words(spec: Number) -> str:
    """How a row states a range: `1–100`, `0s–7d`, `over 0s, up to 1h`."""
    show = {
        "duration": human_duration,
        "size": lambda v: human_size(int(v)),
    }.get(spec.kind, lambda v: str(int(v)))
    if spec.low_open:
        return f"over {show(spec.low)}, up to {show(spec.high)}"
    return f"{show(spec.low)}–{show(spec.high)}"


def test_every_variable_the_code_reads_is_documented():
    missing = sorted(variables_read() - set(rows()))
    assert not missing, f"not in the README's Configuration table: {missing}"


def test_every_documented_variable_is_read_by_the_code():
    stale = sorted(set(rows()) - variables_read())
    assert not stale, f"documented but read nowhere: {stale}"


NUMERIC = [(name, spec, default) for name, (_, spec, default) in NUMBERS.items()]
NUMERIC += [
    (name, LIMITS[field], getattr(SandboxLimits(), field)) for name, field in SANDBOX.items()
]


@pytest.mark.parametrize(("name", "spec", "default"), NUMERIC, ids=[n for n, _, _ in NUMERIC])
def test_each_numbers_default_and_range_are_the_codes(name: str, spec: Number, default: float):
    row = rows()[name]
    documented = default_of(row)
    if default < spec.low or (spec.low_open and default == spec.low):
        # Outside its range: the default means "unset" (not served, off).
        assert documented is None, row
    else:
        assert documented is not None, f"{name}: no [default]"
        assert spec.parse(documented) == pytest.approx(default), row
    assert range_words(spec) in row, f"{name}: expected the range {range_words(spec)!r}"


def example() -> tuple[str, dict[str, Any]]:
    (block,) = re.findall(r"^```toml\n(.*?)^```", SECTION, flags=re.DOTALL | re.MULTILINE)
    (repo,) = tomllib.loads(block)["repos"]
    return block, repo


def test_the_example_holds_every_repository_key_and_no_other():
    _, repo = example()
    assert set(repo) == set(_TYPES)


def test_the_examples_tables_hold_every_key_of_theirs():
    _, repo = example()
    assert set(repo["deploy"]) == {*DEPLOY_KEYS, "timeout"}
    assert {k for entry in repo["notify"] for k in entry} == set(notifyconfig._KEYS)
    assert set(repo["sandbox_limits"]) == set(LIMITS)


def test_every_key_line_says_what_it_means_and_whether_it_is_required_or_its_default():
    block, _ = example()
    # Required keys per table; a table header's own line says whether the table is optional.
    required = {
        "repos": set(_REQUIRED),
        "deploy": {"cluster", "location", "deployment"},
        "vertex": {"pipeline"},
        "notify": {"kind", "url_env"},
    }
    table = "repos"
    for line in block.splitlines():
        header = re.match(r"^\[\[?repos(?:\.([a-z_]+))?\]\]?", line)
        key = re.match(r"^([a-z_]+)\s*=", line)
        if header:
            table = header.group(1) or "repos"
            name, needed = table, table == "repos"
        elif key:
            name, needed = key.group(1), key.group(1) in required[table]
        else:
            continue
        comment = line.partition("#")[2]
        if table == "repos" and header:
            continue  # `[[repos]]` itself
        assert comment.strip(), f"{name}: no comment saying what it means"
        assert ("required" if needed else "default") in comment, f"{table}: {line}"


@pytest.mark.parametrize(
    "field", [f for f in dataclasses.fields(RepoConfig) if isinstance(f.default, str | bool)]
)
def test_a_plain_defaults_comment_spells_the_codes_default(field: dataclasses.Field[Any]):
    block, _ = example()
    (line,) = [line for line in block.splitlines() if line.startswith(f"{field.name} =")]
    default = field.default
    spelt = str(default).lower() if isinstance(default, bool) else f'"{default}"'
    assert f"default {spelt}" in line, line

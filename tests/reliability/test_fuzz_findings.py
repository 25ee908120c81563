"""What the receiver fuzzing found, each pinned by the smallest request that showed it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from service.webhooks import declared_over
from tests.reliability.fuzz_support import Case, Harness
from tests.service.forge_kits import GITHUB


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Harness]:
    harness = Harness(tmp_path)
    yield harness
    harness.close()


def github_push(*extra: tuple[bytes, bytes]) -> Case:
    raw, named = GITHUB.sign(GITHUB.push())
    headers = tuple((k.lower().encode(), v.encode()) for k, v in named.items())
    return Case("github", headers + extra, raw)


@pytest.mark.parametrize(
    "declared",
    ["²".encode("latin-1"), b"9" * 5000, b"0" * 5000 + b"12"],
    ids=["superscript-two", "5000-digits", "leading-zeros"],
)
def test_content_length_that_int_refuses_is_no_declaration_not_a_500(
    harness: Harness, declared: bytes
):
    case = github_push((b"content-length", declared))
    (outcome,) = harness.send([case])
    assert outcome.error is None, outcome.error
    expected = 413 if declared.startswith(b"9") else 202
    assert outcome.status == expected, orjson.loads(outcome.body)


def test_declared_length_counts_only_ascii_digits():
    assert declared_over("2" * 5000, 10) and declared_over("11", 10)
    assert not declared_over("0" * 5000 + "10", 10) and not declared_over("10", 10)
    assert not any(declared_over(v, 10) for v in ("²", "٣٣", "1e3", "-1", " 12", "", None))

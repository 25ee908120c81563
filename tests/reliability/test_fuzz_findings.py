"""What the receiver fuzzing found, each pinned by the smallest request that showed it."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
import sqlalchemy as sa

from service.forges.payloadfilter import payload_files
from service.intake import Incoming, Recorded
from service.webhooks import declared_over
from service.writer import DeliveryWriter
from tests.conftest import new_pg_database
from tests.reliability.fuzz_support import Case, Harness, Stats
from tests.service.forge_kits import GITHUB, KITS, REPO, SHA, Kit
from trainhook.builds import BuildSpec, Delivery
from trainhook.db import make_engine
from trainhook.errors import DatabaseUnavailable


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Harness]:
    harness = Harness(tmp_path)
    yield harness
    harness.close()


@pytest.fixture
def harness_on(tmp_path: Path, db_url: str) -> Iterator[Harness]:
    """The fuzzing harness over SQLite, then over PostgreSQL."""
    harness = Harness(tmp_path, database_url=db_url)
    yield harness
    harness.close()


def signed(kit: Kit, payload: dict, *extra: tuple[bytes, bytes]) -> Case:
    raw, named = kit.sign(payload)
    headers = tuple((k.lower().encode(), v.encode()) for k, v in named.items())
    return Case(kit.route, headers + extra, raw)


def github_push(*extra: tuple[bytes, bytes]) -> Case:
    return signed(GITHUB, GITHUB.push(), *extra)


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


def listing(kit: Kit, *files: str) -> dict:
    """A push to the path-filtered repository whose payload lists every changed file."""
    payload = kit.push()
    payload["commits"] = [{"id": "1" * 40, "added": list(files), "removed": [], "modified": []}]
    payload.update({"before": "2" * 40, "forced": False})
    payload.update({"total_commits_count": 1, "total_commits": 1})
    return payload


def test_a_listed_path_holding_a_nul_is_no_git_path_so_the_worker_decides():
    payload = listing(GITHUB, "notes\x00.md")
    assert payload_files("github", payload) is None
    assert payload_files("github", listing(GITHUB, "notes.md")) == {"notes.md"}


@pytest.mark.parametrize("kit", KITS, ids=[k.route for k in KITS])
def test_a_signed_push_listing_a_nul_path_is_queued_not_a_503_for_its_whole_commit(
    harness_on: Harness, kit: Kit
):
    # Before: the "only ignored paths changed: notes\x00.md" reason reached PostgreSQL, which
    # refuses NUL in text: the whole group commit failed, and every delivery in it got a 503.
    cases = [signed(kit, listing(kit, "notes\x00.md")), signed(kit, kit.push())]
    outcomes = harness_on.send(cases)
    assert [o.status for o in outcomes] == [202, 202], [o.body for o in outcomes]
    stats = Stats(kit.route)
    harness_on.account(cases, outcomes, stats)
    assert not stats.violations + harness_on.finish()


@pytest.mark.postgres
def test_a_delivery_postgresql_refuses_fails_alone_not_its_whole_commit(pg_server):
    """Whatever value slips past validation and is refused (DataError), the deliveries
    committed with it are stored: the refusal is isolated like a constraint violation."""
    engine = make_engine(new_pg_database(pg_server))
    writer = DeliveryWriter(engine)

    def item(n: int, reason: str | None) -> Incoming:
        delivery = Delivery("github", "42", f"d-{n}", "push", REPO, {}, b"{}", datetime.now(UTC))
        if reason is not None:
            return Incoming(delivery, None, reason)
        return Incoming(delivery, BuildSpec("github", REPO, "refs/heads/main", SHA))

    async def record_together() -> list[Any]:
        items = [item(1, None), item(2, "refused\x00"), item(3, "ignored")]
        return await asyncio.gather(*(writer.record(i) for i in items), return_exceptions=True)

    try:
        first, refused, third = asyncio.run(record_together())
    finally:
        writer.stop()
    assert isinstance(refused, DatabaseUnavailable)
    assert isinstance(first, Recorded) and first.build_id is not None
    assert isinstance(third, Recorded) and (third.build_id, third.reason) == (None, "ignored")
    with engine.connect() as conn:
        stored = conn.execute(sa.text("SELECT delivery_id FROM deliveries")).scalars().all()
    assert sorted(stored) == ["d-1", "d-3"]
    engine.dispose()

"""Fuzzing the webhook receivers: whatever arrives, a contract answer, and rows only for a
valid signature, never half-written.

Every route (GitHub, GitLab, Gitea, Forgejo) gets TRAINHOOK_FUZZ_COUNT requests (default 2,000;
100,000 is the full run, as in bench/fuzz/run.py) made from Hypothesis-drawn values and from
mutations of the published payloads in ../shared/fixtures/webhooks, plus Hypothesis @given
tests (derandomized) whose examples each make a few requests. Generator, app driver and checks
are in fuzz_support.py; what each check means is written there.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import new_pg_database
from tests.reliability.fuzz_support import (
    HEADER_VALUES,
    JSON_VALUES,
    PROVIDERS,
    RAW_BODIES,
    TEXTS,
    Case,
    Fixture,
    Generator,
    Harness,
    Pools,
    Stats,
    draw_pools,
    fuzz,
    load_fixtures,
)
from tests.service.forge_kits import KITS, paths
from tests.support.postgres import PostgresServer
from tests.support.required import unavailable

COUNT = int(os.environ.get("TRAINHOOK_FUZZ_COUNT", "2000"))
SEED = int(os.environ.get("TRAINHOOK_FUZZ_SEED", "0"))
POOL = 2000 if COUNT >= 50_000 else 300  # Hypothesis examples drawn per strategy
# The suite's default timeout (300 s) is for the default count; the full run gets its own.
pytestmark = pytest.mark.timeout(max(300, COUNT // 100))

FIXTURES: dict[str, tuple[Fixture, ...]] = {p: load_fixtures(p) for p in PROVIDERS}
DRAWN = settings(
    max_examples=60,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    """One app over one SQLite file for the whole module, as the service runs."""
    harness = Harness(tmp_path_factory.mktemp("fuzz"), FIXTURES)
    yield harness
    harness.close()


@pytest.fixture(scope="module")
def pools() -> Pools:
    return draw_pools(POOL, SEED)


def assert_clean(stats: Stats, harness: Harness) -> None:
    violations = stats.violations + harness.finish()
    assert not violations, f"{len(violations)} violations; the first:\n{violations[0].report()}"


@pytest.mark.parametrize("provider", PROVIDERS)
def test_fuzzed_requests_get_contract_answers_and_store_only_signed_whole_deliveries(
    harness: Harness, pools: Pools, provider: str
):
    """Generated requests, and mutated published payloads when ../shared is present."""
    stats = fuzz(harness, provider, COUNT, pools, seed=SEED, fixtures=FIXTURES[provider])
    assert_clean(stats, harness)
    # The run reached the parsing after verification, and stored deliveries of both kinds.
    assert stats.signed > COUNT // 4 and stats.statuses[202] and stats.statuses[200]
    assert stats.statuses[400] and stats.statuses[401] and stats.statuses[404]


@pytest.fixture(scope="module")
def pg_harness(
    pg_server: PostgresServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Harness]:
    harness = Harness(tmp_path_factory.mktemp("fuzz-pg"), FIXTURES, new_pg_database(pg_server))
    yield harness
    harness.close()


@pytest.mark.postgres
@pytest.mark.parametrize("provider", PROVIDERS)
def test_fuzzed_requests_on_postgresql_get_contract_answers_and_whole_rows(
    pg_harness: Harness, pools: Pools, provider: str
):
    """PostgreSQL refuses what SQLite stores (NUL in text, over-long varchar): a tenth of
    the count, there, where such values would turn into 503s."""
    stats = fuzz(
        pg_harness, provider, max(500, COUNT // 10), pools, seed=SEED, fixtures=FIXTURES[provider]
    )
    assert_clean(stats, pg_harness)


@pytest.mark.parametrize("provider", PROVIDERS)
def test_mutated_published_payloads_get_contract_answers_and_store_only_signed_ones(
    harness: Harness, pools: Pools, provider: str
):
    if not FIXTURES[provider]:
        unavailable("SHARED", "../shared/fixtures/webhooks is not present beside the repository")
    count = max(200, COUNT // 4)
    stats = fuzz(
        harness, provider, count, pools, seed=SEED, fixtures=FIXTURES[provider], generated=False
    )
    assert_clean(stats, harness)
    assert stats.signed > count // 4 and stats.statuses[202]


def send_and_check(harness: Harness, cases: list[Case]) -> None:
    stats = Stats(cases[0].provider)
    harness.account(cases, harness.send(cases), stats)
    assert not stats.violations, stats.violations[0].report()


@DRAWN
@given(
    provider=st.sampled_from(PROVIDERS),
    rng=st.randoms(use_true_random=False),
    value=JSON_VALUES,
    text=TEXTS,
    header=HEADER_VALUES,
    raw=RAW_BODIES,
)
def test_requests_made_from_drawn_values_get_contract_answers_and_whole_rows(
    harness: Harness,
    provider: str,
    rng: random.Random,
    value: Any,
    text: str,
    header: bytes,
    raw: bytes,
):
    # The generator, fed this example's values only (and every published payload).
    pools = Pools((value,), (text,), (header,), (raw,))
    generator = Generator(provider, pools, FIXTURES[provider], rng)
    send_and_check(harness, [generator.case() for _ in range(8)])


KIT_OF = {k.route: k for k in KITS}


@DRAWN
@given(provider=st.sampled_from(PROVIDERS), data=st.data(), value=JSON_VALUES)
def test_a_validly_signed_push_with_any_field_replaced_is_answered_with_whole_rows(
    harness: Harness, provider: str, data: st.DataObject, value: Any
):
    """Past the signature: every field the adapters read, set to any JSON value."""
    kit = KIT_OF[provider]
    payload = kit.push()
    path = data.draw(st.sampled_from(list(paths(payload))), label="path")
    node = payload
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    raw, named = kit.sign(payload, delivery=f"drawn-{data.draw(st.uuids())}")
    headers = tuple((k.lower().encode(), v.encode()) for k, v in named.items())
    case = Case(provider, headers, raw, origin=f"field {'.'.join(path)}")
    assert case.signed
    send_and_check(harness, [case])


def test_the_fixture_part_skips_cleanly_without_the_shared_folder(tmp_path: Path):
    assert all(load_fixtures(p, tmp_path / "absent") == () for p in PROVIDERS)
    with pytest.raises(ValueError, match="no fixtures"):
        Generator("github", draw_pools(5), (), generated=False)

"""Fixtures for the forge feedback tests (path filters, statuses, reconcile)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.forges.fakeforge import FakeForge, running


@pytest.fixture
def forge() -> Iterator[FakeForge]:
    """A fake forge API on a free loopback port."""
    yield from running()

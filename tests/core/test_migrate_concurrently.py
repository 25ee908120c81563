"""Every pod migrates as it starts (k8s/: an init container), so upgrades run side by side."""

from __future__ import annotations

import subprocess
import sys
import uuid

import pytest
import sqlalchemy as sa

from trainhook.db import make_engine
from trainhook.models import metadata

UPGRADE = "import sys; from trainhook.db import upgrade; upgrade(sys.argv[1])"


@pytest.mark.postgres
def test_upgrades_started_together_on_an_empty_postgres_all_succeed_once(pg_server):
    name = "m_" + uuid.uuid4().hex[:12]
    admin = sa.create_engine(pg_server.url(), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE {name}")
    admin.dispose()
    url = pg_server.url(name)
    # Separate processes, as separate pods are: Alembic's context is one per process.
    runs = [
        subprocess.Popen(
            [sys.executable, "-c", UPGRADE, url],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for _ in range(4)
    ]
    outputs = [run.communicate(timeout=120)[0] for run in runs]
    assert [run.returncode for run in runs] == [0] * 4, outputs
    engine = make_engine(url)
    try:
        assert set(sa.inspect(engine).get_table_names()) >= set(metadata.tables)
        with engine.connect() as conn:
            versions = conn.execute(sa.text("SELECT version_num FROM alembic_version")).all()
    finally:
        engine.dispose()
    assert len(versions) == 1

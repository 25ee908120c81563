"""Shared fixtures: migrated databases (SQLite and a real PostgreSQL), settings, git repos."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from tests.support.gitrepo import GitRepo
from tests.support.postgres import PostgresServer, durable_postgres_or_skip, find_pg_bin
from tests.support.required import unavailable
from trainhook.db import make_engine, upgrade
from trainhook.settings import Settings, load_settings

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = REPO_ROOT.parent / "shared"


def shared_path(*parts: str) -> Path:
    """A file under ../shared; when absent the test is skipped (failed under
    TRAINHOOK_REQUIRE_SHARED)."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        unavailable("SHARED", f"../shared/{'/'.join(parts)} is not present beside the repository")
    return path


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """One last line saying what was skipped and why, so a skip never goes unseen."""
    reports = terminalreporter.stats.get("skipped", [])
    if not reports:
        terminalreporter.write_line("skipped: none")
        return
    reasons: dict[str, int] = {}
    for report in reports:
        longrepr = report.longrepr
        reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
        reason = reason.removeprefix("Skipped: ").splitlines()[0] if reason else "no reason"
        reasons[reason] = reasons.get(reason, 0) + 1
    parts = [f"{why} ({n})" for why, n in sorted(reasons.items(), key=lambda kv: -kv[1])]
    terminalreporter.write_line(f"skipped {len(reports)}: " + "; ".join(parts))


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PostgresServer]:
    if find_pg_bin() is None:
        unavailable("POSTGRES", "PostgreSQL server not installed: apt-get install postgresql")
    server = PostgresServer().start()
    template = server.url("trainhook_template")
    admin = sa.create_engine(server.url(), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql("CREATE DATABASE trainhook_template")
    upgrade(template)
    admin.dispose()
    yield server
    server.destroy()


def new_pg_database(server: PostgresServer) -> str:
    """A fresh database copied from the migrated template (fast: no migration per test)."""
    name = "t_" + uuid.uuid4().hex[:12]
    admin = sa.create_engine(server.url(), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE {name} TEMPLATE trainhook_template")
    admin.dispose()
    return server.url(name)


@pytest.fixture
def own_pg() -> Iterator[PostgresServer]:
    """A durable PostgreSQL of the test's own (the test kills and starts it), with a migrated
    `trainhook` database: `own_pg.url("trainhook")`."""
    server = durable_postgres_or_skip()
    try:
        admin = sa.create_engine(server.url(), isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.exec_driver_sql("CREATE DATABASE trainhook")
        admin.dispose()
        upgrade(server.url("trainhook"))
        yield server
    finally:
        server.destroy()


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sqlite-template") / "template.db"
    upgrade(f"sqlite:///{path}")
    return path


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path, sqlite_template: Path) -> str:
    """A migrated, empty database: the test runs once on SQLite and once on PostgreSQL."""
    if request.param == "sqlite":
        path = tmp_path / "trainhook.db"
        shutil.copy(sqlite_template, path)
        return f"sqlite:///{path}"
    return new_pg_database(request.getfixturevalue("pg_server"))


@pytest.fixture
def sqlite_url(tmp_path: Path, sqlite_template: Path) -> str:
    """A migrated, empty SQLite database (for tests about behaviour that is not SQL-specific)."""
    path = tmp_path / "trainhook.db"
    shutil.copy(sqlite_template, path)
    return f"sqlite:///{path}"


@pytest.fixture
def origin(tmp_path: Path) -> GitRepo:
    """An empty git repository on branch main: the repository trainhook is told to clone."""
    return GitRepo(tmp_path / "origin")


@pytest.fixture
def sqlite_engine(sqlite_url: str) -> Iterator[sa.Engine]:
    """For tests about files and processes, not SQL: SQLite only, to keep the suite fast."""
    eng = make_engine(sqlite_url)
    yield eng
    eng.dispose()


@pytest.fixture(scope="session", autouse=True)
def child_bytecode_cache() -> Iterator[None]:
    """Let the Python children of the tests (trainer, health check, test commands) keep
    bytecode in a cache outside the tree. Without it, an environment that sets
    PYTHONDONTWRITEBYTECODE recompiles scikit-learn in every child: seconds per process."""
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


@pytest.fixture
def engine(db_url: str) -> Iterator[sa.Engine]:
    eng = make_engine(db_url)
    yield eng
    eng.dispose()


REPO_TOML = """
[[repos]]
name = "{name}"
provider = "{provider}"
clone_url = "{clone_url}"
branches = {branches}
secret_env = "TEST_WEBHOOK_SECRET"
{extra}
"""

SECRET = "It's a Secret to Everybody"


@pytest.fixture
def make_settings(tmp_path: Path) -> Callable[..., Settings]:
    """Build Settings the way the service does, from a repositories file and an environment."""

    def build(
        db_url: str | None = None,
        *,
        name: str = "octo-org/social-score-api",
        provider: str = "github",
        clone_url: str = "https://github.com/octo-org/social-score-api.git",
        branches: tuple[str, ...] = ("main",),
        extra: str = "",
        env: dict[str, Any] | None = None,
    ) -> Settings:
        config = tmp_path / "trainhook.toml"
        config.write_text(
            REPO_TOML.format(
                name=name,
                provider=provider,
                clone_url=clone_url,
                branches="[" + ", ".join(f'"{b}"' for b in branches) + "]",
                extra=extra,
            )
        )
        base = {
            "TRAINHOOK_HOME": str(tmp_path / "home"),
            "TRAINHOOK_CONFIG": str(config),
            "TEST_WEBHOOK_SECRET": SECRET,
            "TRAINHOOK_API_TOKEN": "test-token-0123456789",
            # No image builds unless a test asks for an engine: `local` would pick one.
            "TRAINHOOK_BUILDER": "bundle",
        }
        if db_url:
            base["TRAINHOOK_DATABASE_URL"] = db_url
        base.update(env or {})
        return load_settings({k: v for k, v in base.items() if v is not None})

    return build

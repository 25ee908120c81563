"""Alembic environment: migrations run against the URL given by `trainhook migrate`."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context

from trainhook.db import make_engine
from trainhook.models import metadata

config = context.config
target_metadata = metadata
# Every pod runs `trainhook migrate` as it starts (k8s/: an init container): on PostgreSQL
# one upgrade at a time, so the others wait, then find the schema current and do nothing.
MIGRATE_LOCK_KEY = 0x7472_6169_6E68  # "trainh": one bigint, trainhook's own


def run_migrations_offline() -> None:
    context.configure(
        url=config.get_main_option("sqlalchemy.url"),
        target_metadata=target_metadata,
        literal_binds=True,
        render_as_batch=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    url = config.get_main_option("sqlalchemy.url")
    assert url, "sqlalchemy.url is not set"
    engine = make_engine(url, poolclass=sa.pool.NullPool)
    with engine.connect() as connection:
        # SQLite cannot ALTER most things: batch mode rebuilds tables when a migration needs to.
        context.configure(
            connection=connection, target_metadata=target_metadata, render_as_batch=True
        )
        with context.begin_transaction():
            if connection.dialect.name == "postgresql":
                # Held until this transaction ends; taken before Alembic reads the version.
                connection.execute(
                    sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATE_LOCK_KEY}
                )
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()

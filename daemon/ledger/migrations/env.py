"""Alembic's environment for the ledger: the URL comes from `daemon.ledger.migrate`
(config.attributes["url"]), never from an alembic.ini."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine, pool

url = context.config.attributes["url"]
connectable = create_engine(url, poolclass=pool.NullPool)
with connectable.connect() as connection:
    context.configure(connection=connection, target_metadata=None)
    with context.begin_transaction():
        context.run_migrations()

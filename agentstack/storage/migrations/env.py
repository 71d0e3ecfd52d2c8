"""Alembic's environment for the main database. agentstack runs migrations itself
(``agentstack/storage/migrate.py`` hands over an open connection in ``config.attributes``), so there
is no alembic.ini; ``agentstack db migrate`` is the command to use."""

from __future__ import annotations

from alembic import context

from agentstack.storage.schema import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations with `agentstack db migrate`, not the alembic command")
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True,
                  transaction_per_migration=True)
with context.begin_transaction():
    context.run_migrations()

"""Running the main database's Alembic migrations once, and refusing a schema that is not current.

* :func:`upgrade` brings a database to the newest revision under a lock, so two processes never
  migrate at once: a PostgreSQL advisory lock, or a file lock beside the SQLite file. A database
  made before Alembic (its history in the ``_migrations`` table) is first completed with those
  steps and stamped at the baseline revision, so nothing is re-created and nothing is lost.
* :func:`ensure_current` raises :class:`SchemaError` naming ``agentstack db migrate`` when the
  schema is older (or newer) than this agentstack.

``agentstack db migrate`` calls :func:`upgrade`; the server and the worker call
:func:`agentstack.db.open_db`, which migrates on open only where ``database.migrate_on_start`` says
so (by default SQLite yes, PostgreSQL no). This module knows nothing about what the tables hold.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from agentstack.errors import ConfigError
from agentstack.storage.database import Database, redact

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
LEGACY_TABLE = "_migrations"
BASELINE = "0001_baseline"
PG_LOCK_KEY = 0x6167_7374  # "agst": the advisory lock every migrating process takes
MIGRATE_COMMAND = "agentstack db migrate"


class SchemaError(ConfigError):
    """The database schema is not the one this agentstack needs."""

    code = "schema_not_current"


def _config(connection: Any = None) -> Any:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.attributes["connection"] = connection
    return cfg


def head() -> str:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(_config()).get_current_head()


def current(db: Database) -> str | None:
    """The revision the database is at; None for an empty database (or a pre-Alembic one)."""
    from alembic.runtime.migration import MigrationContext

    with db.engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def _legacy_names(conn: sa.Connection) -> list[str] | None:
    if not sa.inspect(conn).has_table(LEGACY_TABLE):
        return None
    return [r[0] for r in conn.execute(sa.text(f"SELECT name FROM {LEGACY_TABLE} ORDER BY id"))]


@contextlib.contextmanager
def _migration_lock(db: Database) -> Iterator[None]:
    if db.is_postgres:
        with db.engine.connect() as conn:
            conn.execute(sa.text("SELECT pg_advisory_lock(:k)"), {"k": PG_LOCK_KEY})
            conn.commit()
            try:
                yield
            finally:
                conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": PG_LOCK_KEY})
                conn.commit()
    else:
        from filelock import FileLock

        path = db.path
        if path is None:  # in-memory: one connection, nobody to race
            yield
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(path) + ".migrate.lock", timeout=300):
            yield


def _finish_legacy(db: Database, legacy: Sequence[Any]) -> None:
    """Complete a pre-Alembic SQLite database with its own remaining steps, then stamp it."""
    from alembic import command

    from agentstack.storage import sqlite as legacy_sqlite

    assert db.path is not None
    conn = legacy_sqlite.connect(db.path)
    try:
        legacy_sqlite.migrate(conn, legacy)
    finally:
        conn.close()
    with db.engine.begin() as conn:
        command.stamp(_config(conn), BASELINE)


def upgrade(db: Database, *, legacy: Sequence[Any] = ()) -> dict[str, Any]:
    """Migrate to the newest revision under the lock; returns ``{"from", "to", "stamped_legacy"}``.
    ``legacy``: the pre-Alembic migration list whose history a ``_migrations`` table records."""
    from alembic import command

    with _migration_lock(db):
        before = current(db)
        stamped = False
        if before is None:
            with db.engine.connect() as conn:
                names = _legacy_names(conn)
            if names is not None:
                known = [m.name for m in legacy]
                if names != known[:len(names)]:
                    raise SchemaError(f"the database's migration history {names} is not agentstack's {known}",
                                      fix="point database.url at agentstack's own database")
                _finish_legacy(db, legacy)
                stamped = True
        with db.engine.begin() as conn:
            command.upgrade(_config(conn), "head")
        after = current(db)
    return {"from": before if not stamped else f"{BASELINE} (legacy)", "to": after, "stamped_legacy": stamped}


def ensure_current(db: Database) -> str:
    """The current revision, or :class:`SchemaError` saying which command brings it up to date."""
    want = head()
    have = current(db)
    if have == want:
        return have
    where = redact(db.url)
    if have is None:
        raise SchemaError(f"the database at {where} has no agentstack schema (this agentstack needs revision "
                          f"{want})", fix=f"run `{MIGRATE_COMMAND}` once with the same settings, then start again")
    from alembic.script import ScriptDirectory

    known = {s.revision for s in ScriptDirectory.from_config(_config()).walk_revisions()}
    if have not in known:
        raise SchemaError(f"the database at {where} is at revision {have}, newer than this agentstack knows "
                          f"(newest here: {want})", fix="upgrade agentstack on this replica to the version that "
                          "migrated the database")
    raise SchemaError(f"the database at {where} is at revision {have}; this agentstack needs {want}",
                      fix=f"run `{MIGRATE_COMMAND}` once (any one machine, same settings), then start again")

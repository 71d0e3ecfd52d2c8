"""The main relational database on SQLAlchemy 2 Core: SQLite (the default, one file in the data
directory) or PostgreSQL (``database.url``, psycopg 3), with the same calls for both.

* :meth:`Database.tx` is a write transaction: ``BEGIN IMMEDIATE`` on SQLite (so concurrent writers
  wait on the busy timeout instead of failing half-way), an ordinary transaction on Postgres.
* :meth:`Database.query` runs one read and returns rows as mappings (``row["column"]``).
* SQLite connections use WAL, a busy timeout and foreign keys, as before; SQLAlchemy's pysqlite
  driver is told not to manage transactions itself, so a ``BEGIN`` really starts one (DDL included).

The schema is in ``schema.py`` and its history in Alembic migrations (``migrations/``, run by
``agentstack db migrate`` or on start, see ``migrate.py``). This module knows nothing about what
the tables hold.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine, RowMapping

BUSY_TIMEOUT_MS = 30_000


def sqlite_url(path: Path | str) -> str:
    return f"sqlite:///{Path(path)}"


def redact(url: str) -> str:
    """``url`` with its password hidden, for logs and error messages."""
    try:
        return sa.make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001  (never show an unparsable URL: it may hold a secret)
        return "<unparsable database url>"


def _sqlite_engine(url: sa.URL) -> Engine:
    if url.database and url.database != ":memory:":
        Path(url.database).parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(url, connect_args={"timeout": BUSY_TIMEOUT_MS / 1000, "check_same_thread": False})

    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # pysqlite must not BEGIN (or COMMIT before DDL) on its own
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    @sa.event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        mode = conn.get_execution_options().get("sqlite_begin", "IMMEDIATE")
        conn.exec_driver_sql(f"BEGIN {mode}")

    return engine


class Database:
    """One SQLAlchemy engine over the main database; safe to share between threads."""

    def __init__(self, url: str, *, pool_size: int = 5):
        self.url = url
        parsed = sa.make_url(url)
        self.dialect = parsed.get_backend_name()
        if self.dialect == "sqlite":
            self.engine = _sqlite_engine(parsed)
        elif self.dialect == "postgresql":
            if parsed.drivername == "postgresql":
                parsed = parsed.set(drivername="postgresql+psycopg")
            self.engine = sa.create_engine(parsed, pool_size=pool_size, max_overflow=pool_size * 2,
                                           pool_pre_ping=True)
        else:
            from agentstack.errors import ConfigError

            raise ConfigError(f"database.url {redact(url)} names a {self.dialect!r} database; agentstack supports "
                              "sqlite and postgresql", fix="use sqlite:///path/agentstack.db or "
                              "postgresql://user:password@host:5432/dbname")

    @property
    def is_postgres(self) -> bool:
        return self.dialect == "postgresql"

    @property
    def path(self) -> Path | None:
        """The SQLite file, or None for Postgres."""
        return Path(self.engine.url.database) if self.dialect == "sqlite" and self.engine.url.database else None

    @contextlib.contextmanager
    def tx(self) -> Iterator[Connection]:
        """A write transaction, committed on success and rolled back on any exception."""
        with self.engine.begin() as conn:
            yield conn

    @contextlib.contextmanager
    def read(self) -> Iterator[Connection]:
        """A read transaction (deferred on SQLite, so readers never wait for writers)."""
        with self.engine.connect().execution_options(sqlite_begin="DEFERRED") as conn, conn.begin():
            yield conn

    def query(self, statement: str | sa.Executable, params: Mapping[str, Any] | None = None) -> list[RowMapping]:
        """Rows of one read as mappings. ``statement``: Core, or SQL text with ``:name`` parameters."""
        stmt = sa.text(statement) if isinstance(statement, str) else statement
        with self.read() as conn:
            return list(conn.execute(stmt, dict(params or {})).mappings().all())

    def execute(self, statement: str | sa.Executable, params: Mapping[str, Any] | Sequence[Mapping[str, Any]]
                | None = None) -> int:
        """One write in its own transaction; returns the row count."""
        stmt = sa.text(statement) if isinstance(statement, str) else statement
        with self.tx() as conn:
            return conn.execute(stmt, params or {}).rowcount

    def close(self) -> None:
        self.engine.dispose()

"""SQLite connections and ordered schema migrations.

Every database agentstack writes (the main ``agentstack.db``, each index's ``index.db``) goes
through :func:`connect`: WAL journal, a busy timeout so concurrent writers wait instead of failing,
and foreign keys on. Schema changes are an ordered list of :class:`Migration` functions recorded in
a ``_migrations`` table, each applied in its own transaction, so a killed process leaves the schema
at a known version.

This module knows nothing about what the tables hold.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

BUSY_TIMEOUT_MS = 30_000


def connect(path: Path | str, *, readonly: bool = False, synchronous: str = "NORMAL") -> sqlite3.Connection:
    """Open ``path`` in WAL mode. ``readonly`` opens it with ``mode=ro`` (it must exist)."""
    path = Path(path)
    if readonly:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=BUSY_TIMEOUT_MS / 1000,
                               check_same_thread=False, isolation_level=None)
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_MS / 1000, check_same_thread=False,
                               isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={synchronous}")
    conn.row_factory = sqlite3.Row
    conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    conn.execute("PRAGMA foreign_keys=ON")
    return conn


@contextlib.contextmanager
def transaction(conn: sqlite3.Connection, *, immediate: bool = True) -> Iterator[sqlite3.Connection]:
    """``BEGIN IMMEDIATE`` … ``COMMIT``, rolled back on any exception (connections are autocommit)."""
    conn.execute("BEGIN IMMEDIATE" if immediate else "BEGIN")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    else:
        conn.execute("COMMIT")


@dataclass(frozen=True)
class Migration:
    """One schema step. ``apply`` runs inside a transaction; never edit a released migration,
    append a new one instead."""

    name: str
    apply: Callable[[sqlite3.Connection], None]


def sql(*statements: str) -> Callable[[sqlite3.Connection], None]:
    """A migration body made of plain SQL statements."""

    def run(conn: sqlite3.Connection) -> None:
        for statement in statements:
            conn.execute(statement)

    return run


def migrate(conn: sqlite3.Connection, migrations: Sequence[Migration]) -> list[str]:
    """Apply the migrations not yet recorded, in order. Returns the names applied."""
    conn.execute("CREATE TABLE IF NOT EXISTS _migrations (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE,"
                 " applied_at REAL NOT NULL)")
    applied: list[str] = []
    for i, migration in enumerate(migrations, start=1):
        with transaction(conn):
            row = conn.execute("SELECT name FROM _migrations WHERE id = ?", (i,)).fetchone()
            if row is not None:
                if row["name"] != migration.name:
                    raise RuntimeError(f"migration {i} is recorded as {row['name']!r} but the code calls it "
                                       f"{migration.name!r}; the database was made by another agentstack")
                continue
            migration.apply(conn)
            conn.execute("INSERT INTO _migrations (id, name, applied_at) VALUES (?, ?, ?)",
                         (i, migration.name, time.time()))
            applied.append(migration.name)
    return applied


class Database:
    """A migrated SQLite file with one connection per thread (FastAPI runs sync work in a pool)."""

    def __init__(self, path: Path | str, migrations: Sequence[Migration] = ()):
        self.path = Path(path)
        self._migrations = tuple(migrations)
        self._local = threading.local()
        self._lock = threading.Lock()
        self._migrated = False
        self._all: list[sqlite3.Connection] = []

    def conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = connect(self.path)
            with self._lock:
                if not self._migrated:
                    migrate(conn, self._migrations)
                    self._migrated = True
                self._all.append(conn)
            self._local.conn = conn
        return conn

    @contextlib.contextmanager
    def tx(self) -> Iterator[sqlite3.Connection]:
        with transaction(self.conn()) as conn:
            yield conn

    def query(self, statement: str, params: Sequence | dict = ()) -> list[sqlite3.Row]:
        return self.conn().execute(statement, params).fetchall()

    def close(self) -> None:
        with self._lock:
            for conn in self._all:
                with contextlib.suppress(sqlite3.Error):
                    conn.close()
            self._all.clear()
        self._local = threading.local()

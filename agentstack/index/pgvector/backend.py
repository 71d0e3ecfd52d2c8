"""The pgvector backend's catalog: which indexes exist, creating and dropping them.

Indexes live in the PostgreSQL database of ``database.url`` (its schema current: ``agentstack db
migrate`` made the catalog tables). Creating an index is one transaction: the catalog row, two
sequences, the first epoch's tables and generation 0, so a crash leaves either all or nothing.
Dropping takes the index's writer lock and removes the same in one transaction. Connections
register the ``vector`` type once (pgvector-python), so vectors travel as numpy arrays in binary.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from agentstack.errors import ConfigError, ConflictError, DependencyMissingError, NotFoundError
from agentstack.index.pgvector import tables
from agentstack.storage.database import Database, redact

if TYPE_CHECKING:
    from agentstack.config import Settings
    from agentstack.index.pgvector.store import PgStore

FORMAT = 1
EXTENSION_FIX = ("run `CREATE EXTENSION vector;` once as a superuser in that database (the pgvector/pgvector "
                 "image has it; elsewhere install pgvector 0.8 or later), or use index.backend=faiss")


def register_vector(dbapi_conn: Any, *, in_transaction: bool = False) -> bool:
    """Teach this psycopg connection the ``vector`` type; False when the extension is missing."""
    import psycopg
    from pgvector.psycopg import register_vector as register

    try:
        register(dbapi_conn)
        return True
    except psycopg.ProgrammingError:  # the type lookup found nothing (no SQL error: the transaction is fine)
        return False
    finally:
        if not in_transaction and not dbapi_conn.autocommit:
            dbapi_conn.rollback()


def _on_connect(dbapi_conn: Any, record: Any) -> None:
    record.info["vector"] = register_vector(dbapi_conn)


def ensure_vector(conn: sa.Connection) -> Any:
    """The psycopg connection under ``conn``, with the ``vector`` type registered (a pooled
    connection opened before the extension existed learns it now)."""
    fairy = conn.connection
    if not fairy.info.get("vector"):
        fairy.info["vector"] = register_vector(fairy.driver_connection, in_transaction=True)
        if not fairy.info["vector"]:
            raise DependencyMissingError("the database has no pgvector extension", fix=EXTENSION_FIX)
    return fairy.driver_connection


class PgBackend:
    """The indexes of one PostgreSQL database."""

    kind = "pgvector"

    def __init__(self, db: Database, *, build_memory_mb: int = 1024, build_workers: int = 2,
                 max_scan_tuples: int = 100_000, owns_db: bool = True):
        if not db.is_postgres:
            raise ConfigError(f"the pgvector index backend needs PostgreSQL; database.url is {redact(db.url)}",
                              fix="set database.url (AGENTSTACK_DATABASE__URL) to postgresql://..., or "
                                  "index.backend=faiss (AGENTSTACK_INDEX__BACKEND=faiss)")
        self.db = db
        self.build_memory_mb = build_memory_mb
        self.build_workers = build_workers
        self.max_scan_tuples = max_scan_tuples
        self._owns_db = owns_db
        sa.event.listen(db.engine, "connect", _on_connect)

    @classmethod
    def from_settings(cls, settings: Settings, *, database_url: str | None = None) -> PgBackend:
        from pydantic import SecretStr

        from agentstack.db import open_db

        if database_url is not None:
            settings = settings.model_copy(update={"database": settings.database.model_copy(
                update={"url": SecretStr(database_url)})})
        if settings.database_url.startswith("sqlite"):
            raise ConfigError("index.backend = pgvector keeps indexes in PostgreSQL, but database.url is SQLite",
                              fix="set database.url (AGENTSTACK_DATABASE__URL) to postgresql://... and run "
                                  "`agentstack db migrate`, or use index.backend=faiss")
        return cls(open_db(settings), build_memory_mb=settings.index.build_memory_mb,
                   build_workers=settings.index.build_workers, max_scan_tuples=settings.index.max_scan_tuples)

    # -- the protocol -------------------------------------------------------------------------
    def names(self) -> list[str]:
        return [r["name"] for r in self.db.query("SELECT name FROM vector_indexes ORDER BY name")]

    def exists(self, name: str) -> bool:
        return bool(self.db.query("SELECT 1 FROM vector_indexes WHERE name = :n", {"n": name}))

    def row(self, name: str) -> dict[str, Any] | None:
        rows = self.db.query("SELECT * FROM vector_indexes WHERE name = :n", {"n": name})
        return dict(rows[0]) if rows else None

    def open(self, name: str) -> PgStore:
        from agentstack.index.pgvector.store import PgStore

        row = self.row(name)
        if row is None:
            raise NotFoundError(f"index {name!r} does not exist (backend pgvector, {redact(self.db.url)})",
                                fix="list indexes with `agentstack index list`, or create it with "
                                    f"`agentstack index create {name} PATH...`")
        return PgStore(self, name, int(row["id"]))

    def create(self, name: str, *, spec: dict[str, Any], config: dict[str, Any]) -> PgStore:
        now = time.time()
        dim = int(config["embedder"]["dim"])
        from agentstack.index.pgvector.store import manifest_of
        from agentstack.index.store import vector_spec

        try:
            with self.db.tx() as conn:
                self._ensure_extension(conn)
                conn.execute(sa.text("LOCK TABLE vector_indexes IN SHARE ROW EXCLUSIVE MODE"))  # one creator a time
                if conn.execute(sa.text("SELECT 1 FROM vector_indexes WHERE name = :n"), {"n": name}).first():
                    raise ConflictError(f"index {name!r} already exists", fix=f"add documents with `agentstack "
                                        f"index add {name} PATH...`, or pick another name")
                index_id = conn.execute(sa.text(
                    "INSERT INTO vector_indexes (name, epoch, generation, manifest_json, spec_json, created_at, "
                    "updated_at) VALUES (:n, 0, 0, '{}', :s, :t, :t) RETURNING id"),
                    {"n": name, "s": json.dumps(spec), "t": now}).scalar_one()
                t = tables.Tables(index_id, 0)
                tables.create_sequences(conn, t)
                tables.create_tables(conn, t, dim)
                kind, params = tables.plan_ann(vector_spec(config), 0)
                tables.build_ann(conn, t, kind, params, memory_mb=self.build_memory_mb, workers=self.build_workers)
                conn.execute(sa.text("INSERT INTO vector_index_generations (index_id, gen, created_at, config_json) "
                                     "VALUES (:i, 0, :t, :c)"), {"i": index_id, "t": now,
                                                                  "c": json.dumps(config, sort_keys=True)})
                manifest = manifest_of(name, 0, config, kind, params, {"documents": 0, "chunks": 0}, created_at=now)
                conn.execute(sa.text("UPDATE vector_indexes SET manifest_json = :m WHERE id = :i"),
                             {"m": json.dumps(manifest), "i": index_id})
        except sa.exc.IntegrityError:
            raise ConflictError(f"index {name!r} already exists (created by another process meanwhile)",
                                fix="use the existing index, or pick another name") from None
        return self.open(name)

    def _ensure_extension(self, conn: sa.Connection) -> None:
        if conn.execute(sa.text("SELECT 1 FROM pg_extension WHERE extname = 'vector'")).first() is not None:
            return
        try:
            with conn.begin_nested():
                conn.execute(sa.text("CREATE EXTENSION IF NOT EXISTS vector"))
        except sa.exc.DBAPIError as exc:
            raise DependencyMissingError(f"PostgreSQL at {redact(self.db.url)} has no pgvector extension and it "
                                         f"could not be created ({type(exc.orig).__name__})", fix=EXTENSION_FIX) from None
        ensure_vector(conn)

    def drop(self, name: str, timeout: float = 30.0) -> None:
        store = self.open(name)
        with store.writer(timeout) as writer:
            with writer.conn.begin():
                for epoch in tables.epochs(writer.conn, store.index_id):
                    tables.drop_tables(writer.conn, tables.Tables(store.index_id, epoch))
                tables.drop_sequences(writer.conn, tables.Tables(store.index_id, 0))
                writer.conn.execute(sa.text("DELETE FROM vector_indexes WHERE id = :i"), {"i": store.index_id})

    def close(self) -> None:
        if self._owns_db:
            self.db.close()

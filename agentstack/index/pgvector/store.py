"""Reads of one pgvector index: each runs in one repeatable-read, read-only transaction that first
reads the catalog row (published generation, epoch, manifest), so it sees exactly one version and
every call sees the newest one: replicas need no notice and no restart to follow a write.

A reader that meets tables a writer dropped meanwhile (an epoch switch, see ``tables.py``) starts
over once on the new ones. This module never writes, except the spec through :meth:`set_spec`.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import sqlalchemy as sa

from agentstack.errors import ConflictError, NotFoundError
from agentstack.index.backend import Export, ExportedDocument
from agentstack.index.pgvector import tables
from agentstack.index.pgvector.backend import FORMAT, ensure_vector
from agentstack.storage.database import redact

if TYPE_CHECKING:
    from agentstack.index.pgvector.backend import PgBackend
    from agentstack.index.pgvector.writer import PgWriter

DOC_COLUMNS = ("doc_id, source, title, format, metadata, n_chunks, length(text) AS chars, content_hash, "
               "ingested_at, added_gen")
EXPORT_BATCH = 512
RETRIES = 3


def manifest_of(name: str, gen: int, config: dict[str, Any], kind: str, params: dict[str, Any],
                counts: dict[str, int], *, created_at: float) -> dict[str, Any]:
    from agentstack import __version__

    return {"format": FORMAT, "backend": "pgvector", "name": name, "generation": gen,
            "embedder": config["embedder"], "chunking": config["chunking"], "pii_policy": config["pii_policy"],
            "vectors": {"requested": config["vectors"], "kind": kind, "params": params}, "counts": counts,
            "created_at": created_at, "updated_at": time.time(), "agentstack_version": __version__}


@dataclass(frozen=True)
class Snap:
    """The catalog row as one reader transaction sees it."""

    generation: int
    tables: tables.Tables
    manifest: dict[str, Any]
    spec: dict[str, Any]


def _missing_table(exc: sa.exc.DBAPIError) -> bool:
    code = getattr(exc.orig, "sqlstate", None)
    return code == "42P01" or "could not open relation" in str(exc.orig)


class PgStore:
    """One index in PostgreSQL (the ``pgvector`` implementation of ``backend.IndexStore``)."""

    backend = "pgvector"

    def __init__(self, owner: PgBackend, name: str, index_id: int):
        self.owner = owner
        self.name = name
        self.index_id = index_id

    # -- the catalog ------------------------------------------------------------------------------
    def _row(self, conn: sa.Connection) -> dict[str, Any]:
        row = conn.execute(sa.text("SELECT * FROM vector_indexes WHERE id = :i"), {"i": self.index_id}).mappings().first()
        if row is None:
            raise NotFoundError(f"index {self.name!r} was deleted", fix="create it again")
        return dict(row)

    def manifest(self) -> dict[str, Any]:
        with self.owner.db.read() as conn:
            return json.loads(self._row(conn)["manifest_json"])

    def spec(self) -> dict[str, Any]:
        with self.owner.db.read() as conn:
            return json.loads(self._row(conn)["spec_json"])

    def set_spec(self, spec: dict[str, Any]) -> None:
        with self.owner.db.tx() as conn:
            conn.execute(sa.text("UPDATE vector_indexes SET spec_json = :s WHERE id = :i"),
                         {"s": json.dumps(spec), "i": self.index_id})

    def alive(self) -> bool:
        return bool(self.owner.db.query("SELECT 1 FROM vector_indexes WHERE id = :i AND name = :n",
                                        {"i": self.index_id, "n": self.name}))

    def location(self) -> str:
        return f"{redact(self.owner.db.url)} (tables vix{self.index_id}_*)"

    # -- one consistent read ----------------------------------------------------------------------
    def read(self, fn: Callable[[sa.Connection, Snap], Any]) -> Any:
        """``fn(conn, snap)`` in a repeatable-read, read-only transaction at the published version."""
        for attempt in range(RETRIES):
            try:
                with self.owner.db.engine.connect() as conn:
                    conn = conn.execution_options(isolation_level="REPEATABLE READ")
                    with conn.begin():
                        conn.execute(sa.text("SET TRANSACTION READ ONLY"))
                        return fn(conn, self._snap(conn))
            except sa.exc.DBAPIError as exc:
                if not _missing_table(exc) or attempt == RETRIES - 1:
                    raise
        raise AssertionError("unreachable")

    def _snap(self, conn: sa.Connection) -> Snap:
        row = self._row(conn)
        ensure_vector(conn)
        return Snap(int(row["generation"]), tables.Tables(self.index_id, int(row["epoch"])),
                    json.loads(row["manifest_json"]), json.loads(row["spec_json"]))

    # -- the reads of the index protocol ----------------------------------------------------------
    def search(self, query: Any, embedder: Any | None) -> list[Any]:
        from agentstack.index.pgvector.search import PgSearcher

        return self.read(lambda conn, snap: PgSearcher(conn, snap.tables, snap.manifest, embedder,
                                                       max_scan_tuples=self.owner.max_scan_tuples).search(query))

    def documents(self, *, offset: int = 0, limit: int = 100, source_prefix: str | None = None
                  ) -> tuple[list[dict[str, Any]], int]:
        def fn(conn: sa.Connection, snap: Snap) -> tuple[list[dict[str, Any]], int]:
            where, params = "", {"limit": max(0, limit), "offset": max(0, offset)}
            if source_prefix:
                where, params["p"], params["n"] = "WHERE left(source, :n) = :p", source_prefix, len(source_prefix)
            total = conn.execute(sa.text(f"SELECT count(*) FROM {snap.tables.docs} {where}"), params).scalar_one()
            rows = conn.execute(sa.text(f"SELECT {DOC_COLUMNS} FROM {snap.tables.docs} {where} ORDER BY source, doc_id "
                                        "LIMIT :limit OFFSET :offset"), params).mappings().all()
            return [dict(r) for r in rows], int(total)

        return self.read(fn)

    def document(self, doc_id: str, *, with_text: bool = False) -> dict[str, Any] | None:
        columns = DOC_COLUMNS + (", text" if with_text else "")

        def fn(conn: sa.Connection, snap: Snap) -> dict[str, Any] | None:
            row = conn.execute(sa.text(f"SELECT {columns} FROM {snap.tables.docs} WHERE doc_id = :d"),
                               {"d": doc_id}).mappings().first()
            return dict(row) if row is not None else None

        return self.read(fn)

    def chunk(self, chunk_id: int) -> dict[str, Any] | None:
        def fn(conn: sa.Connection, snap: Snap) -> dict[str, Any] | None:
            t = snap.tables
            row = conn.execute(sa.text(
                f'SELECT c.id AS chunk_id, c.ordinal, c.start, c."end", c.heading, c.text, d.doc_id, d.source, '
                f"d.title FROM {t.chunks} c JOIN {t.docs} d ON d.row_id = c.doc_row WHERE c.id = :i"),
                {"i": int(chunk_id)}).mappings().first()
            if row is None:
                return None
            out = dict(row)
            out["heading_path"] = json.loads(out.pop("heading"))
            return out

        return self.read(fn)

    def stats(self) -> dict[str, Any]:
        def fn(conn: sa.Connection, snap: Snap) -> dict[str, Any]:
            t, m, g = snap.tables, snap.manifest, snap.generation
            agg = conn.execute(sa.text(f"SELECT count(*), coalesce(sum(tokens), 0), coalesce(sum(length(text)), 0) "
                                       f"FROM {t.chunks}")).one()
            formats = {r[0]: r[1] for r in conn.execute(sa.text(f"SELECT format, count(*) FROM {t.docs} GROUP BY format"))}
            last = conn.execute(sa.text(
                "SELECT kind, at, added, updated, unchanged, deleted, failed, chunks FROM vector_index_ingests "
                "WHERE index_id = :i AND gen <= :g ORDER BY id DESC LIMIT 1"), {"i": self.index_id, "g": g}
                ).mappings().first()
            scrub = {r[0]: int(r[1]) for r in conn.execute(sa.text(
                "SELECT s.entity, sum(s.count) FROM vector_index_scrub_counts s JOIN vector_index_ingests i ON "
                "i.id = s.ingest_id WHERE i.index_id = :i AND i.gen <= :g GROUP BY s.entity ORDER BY s.entity"),
                {"i": self.index_id, "g": g})}
            disk = conn.execute(sa.text(f"SELECT pg_total_relation_size('{t.docs}') + "
                                        f"pg_total_relation_size('{t.chunks}')")).scalar_one()
            return {"name": self.name, "backend": "pgvector", "generation": g, "documents": m["counts"]["documents"],
                    "chunks": int(agg[0]), "tokens": int(agg[1]), "chunk_chars": int(agg[2]), "formats": formats,
                    "embedder": m["embedder"], "vectors": {"kind": m["vectors"]["kind"],
                                                           "requested": m["vectors"]["requested"]["kind"],
                                                           "ntotal": int(agg[0]), **m["vectors"].get("params", {})},
                    "chunking": m["chunking"], "pii_policy": m["pii_policy"], "scrub_totals": scrub,
                    "last_ingest": dict(last) if last else None, "disk_bytes": int(disk),
                    "updated_at": m["updated_at"], "tables": [t.docs, t.chunks]}

        return self.read(fn)

    def verify(self) -> Any:
        from agentstack.index.pgvector.verify import verify

        return verify(self)

    def export(self) -> Export:
        """The published version, read in one repeatable-read transaction held while the
        documents stream (vectors fetched in binary)."""
        conn = self.owner.db.engine.connect().execution_options(isolation_level="REPEATABLE READ")
        tx = conn.begin()
        try:
            conn.execute(sa.text("SET TRANSACTION READ ONLY"))
            snap = self._snap(conn)
            config = json.loads(conn.execute(sa.text(
                "SELECT config_json FROM vector_index_generations WHERE index_id = :i AND gen = :g"),
                {"i": self.index_id, "g": snap.generation}).scalar_one())
            ingests = []
            for r in conn.execute(sa.text("SELECT * FROM vector_index_ingests WHERE index_id = :i AND gen <= :g "
                                          "ORDER BY id"), {"i": self.index_id, "g": snap.generation}).mappings().all():
                entry = {k: r[k] for k in ("gen", "kind", "at", "added", "updated", "unchanged", "deleted", "failed",
                                           "chunks")}
                entry["failures"] = json.loads(r["failures_json"])
                entry["scrub"] = [dict(s) for s in conn.execute(sa.text(
                    "SELECT doc_id, entity, count FROM vector_index_scrub_counts WHERE ingest_id = :i"),
                    {"i": r["id"]}).mappings()]
                ingests.append(entry)
        except BaseException:
            tx.rollback()
            conn.close()
            raise
        return Export(self.name, snap.generation, config, snap.spec, dict(snap.manifest["counts"]), ingests,
                      self._stream(conn, tx, snap))

    def _stream(self, conn: sa.Connection, tx: Any, snap: Snap) -> Iterator[ExportedDocument]:
        t = snap.tables
        raw = ensure_vector(conn)
        try:
            last = -1
            while True:
                with raw.cursor() as cur:
                    cur.execute(f"SELECT row_id, doc_id, source, title, format, metadata, fingerprint, content_hash, "
                                f"text, n_chunks, ingested_at, added_gen FROM {t.docs} WHERE row_id > %s "
                                f"ORDER BY row_id LIMIT %s", (last, EXPORT_BATCH))
                    cols = [c.name for c in cur.description]
                    docs = [dict(zip(cols, r)) for r in cur.fetchall()]
                if not docs:
                    return
                last = docs[-1]["row_id"]
                by_doc: dict[int, list[tuple]] = {d["row_id"]: [] for d in docs}
                with raw.cursor(binary=True) as cur:
                    cur.execute(f'SELECT id, doc_row, ordinal, start, "end", heading, tokens, text, embedding '
                                f"FROM {t.chunks} WHERE doc_row = ANY(%s) ORDER BY id", (list(by_doc),))
                    for c in cur:
                        by_doc[c[1]].append(c)
                for d in docs:
                    chunks = sorted(by_doc.pop(d["row_id"]), key=lambda c: c[2])
                    d.pop("row_id")
                    vectors = np.stack([c[8].to_numpy() for c in chunks]).astype(np.float32) if chunks else \
                        np.empty((0, int(snap.manifest["embedder"]["dim"])), np.float32)
                    yield ExportedDocument(d, [{"id": c[0], "ordinal": c[2], "start": c[3], "end": c[4],
                                                "heading_path": json.loads(c[5]), "tokens": c[6], "text": c[7]}
                                               for c in chunks], vectors)
        finally:
            with contextlib.suppress(Exception):
                tx.rollback()
            conn.close()

    # -- writing ----------------------------------------------------------------------------------
    @contextlib.contextmanager
    def writer(self, timeout: float = 30.0) -> Iterator[PgWriter]:
        """Hold the index's advisory lock (waiting up to ``timeout`` s) on a connection of its own
        and yield the writer; the lock goes with the connection if the process dies."""
        from agentstack.index.pgvector.writer import PgWriter

        conn = self.owner.db.engine.connect()
        try:
            deadline = time.monotonic() + timeout
            while not conn.execute(sa.text("SELECT pg_try_advisory_lock(:ns, :i)"),
                                   {"ns": tables.LOCK_NS, "i": self.index_id}).scalar_one():
                conn.commit()
                if time.monotonic() > deadline:
                    raise ConflictError(f"index {self.name!r} is being written by another process",
                                        fix="wait for that ingest to finish and run the command again")
                time.sleep(0.1)
            conn.commit()
            try:  # from here on the session holds the lock: whatever fails, it is released below
                writer = PgWriter(self, conn)
                writer.recover()
                yield writer
            finally:
                if conn.in_transaction():
                    conn.rollback()
                conn.execute(sa.text("SELECT pg_advisory_unlock(:ns, :i)"), {"ns": tables.LOCK_NS, "i": self.index_id})
                conn.commit()
        finally:
            conn.close()

    def close(self) -> None:
        pass

"""Writes to one pgvector index. Each :meth:`PgWriter.commit` is ONE transaction: the generation
row, the removed and added rows, the ingest log, and the catalog's new generation and manifest.
Its COMMIT is the publish (what the FAISS backend's manifest rename does): a crash before it
leaves the old version untouched (PostgreSQL rolls the transaction back when the connection
drops), after it the new version is complete. Nothing is ever half-published, so there is nothing
to roll forward; :meth:`recover` only drops an old epoch's tables a crash left behind.

Rows of a document are replaced by delete + insert (chunk ids come from the index's sequence and
are never reused). A write that replaces everything fills the next epoch's tables by COPY, builds
their indexes and switches the catalog to them; one that needs another ANN structure (the spec's
``vectors`` changed, an IVF index outgrew its training) builds it beside the old one and swaps
them; both inside the same transaction (``tables.py``).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import sqlalchemy as sa

from agentstack.errors import ConflictError
from agentstack.index import faults
from agentstack.index.pgvector import tables
from agentstack.index.pgvector.backend import ensure_vector
from agentstack.index.pgvector.store import manifest_of
from agentstack.index.store import scrub_map as _scrub_map
from agentstack.index.store import vector_spec as _vector_spec
from agentstack.ingest.documents import PreparedDocument

if TYPE_CHECKING:
    from agentstack.index.pgvector.store import PgStore

log = logging.getLogger(__name__)
DOC_TYPES = ["int8", "text", "text", "text", "text", "jsonb", "text", "text", "text", "int4", "float8", "int4"]
DOC_FIELDS = ("row_id", "doc_id", "source", "title", "format", "metadata", "fingerprint", "content_hash", "text",
              "n_chunks", "ingested_at", "added_gen")
CHUNK_TYPES = ["int8", "int8", "int4", "int4", "int4", "text", "int4", "text", "vector", "int4"]
CHUNK_FIELDS = 'id, doc_row, ordinal, start, "end", heading, tokens, text, embedding, added_gen'
DROP_LOCK_TIMEOUT = "5s"  # dropping an old epoch waits this long for readers, else the next writer does it


class PgWriter:
    """Write access to one index, made by :meth:`PgStore.writer` with the advisory lock held on ``conn``."""

    def __init__(self, store: PgStore, conn: sa.Connection):
        self.store = store
        self.conn = conn
        self.notes: list[str] = []
        self._load_row()

    def _load_row(self) -> None:
        with self.conn.begin():
            row = self.store._row(self.conn)
        self.row = row
        self.manifest: dict[str, Any] = json.loads(row["manifest_json"])
        self.tables = tables.Tables(self.store.index_id, int(row["epoch"]))

    @property
    def generation(self) -> int:
        return int(self.row["generation"])

    def config(self, gen: int | None = None) -> dict[str, Any]:
        with self.conn.begin():
            raw = self.conn.execute(sa.text(
                "SELECT config_json FROM vector_index_generations WHERE index_id = :i AND gen = :g"),
                {"i": self.store.index_id, "g": self.generation if gen is None else gen}).scalar_one()
        return json.loads(raw)

    def recover(self) -> list[str]:
        """Drop the tables of epochs other than the published one (left by a crash right after an
        epoch switch, or by a drop that timed out waiting for readers)."""
        with self.conn.begin():
            stale = [e for e in tables.epochs(self.conn, self.store.index_id) if e != self.tables.epoch]
        for epoch in stale:
            self._drop_epoch(epoch)
        if stale:
            self.notes.append(f"dropped the tables of {len(stale)} earlier epoch(s) left by an interrupted write")
        for note in self.notes:
            log.warning("index %s: %s", self.store.name, note)
        return self.notes

    def _drop_epoch(self, epoch: int) -> bool:
        try:
            with self.conn.begin():
                self.conn.execute(sa.text(f"SET LOCAL lock_timeout = '{DROP_LOCK_TIMEOUT}'"))
                tables.drop_tables(self.conn, tables.Tables(self.store.index_id, epoch))
            return True
        except sa.exc.OperationalError:  # readers still on it: the next writer drops it
            return False

    # -- queries a writer needs -------------------------------------------------------------------
    def _query(self, sql: str, params: dict[str, Any] | None = None) -> list[sa.RowMapping]:
        with self.conn.begin():
            return list(self.conn.execute(sa.text(sql), params or {}).mappings().all())

    def fingerprints(self, doc_ids: Sequence[str]) -> dict[str, str]:
        if not doc_ids:
            return {}
        rows = self._query(f"SELECT doc_id, fingerprint FROM {self.tables.docs} WHERE doc_id = ANY(:ids)",
                           {"ids": list(doc_ids)})
        return {r["doc_id"]: r["fingerprint"] for r in rows}

    def resolve(self, ref: str) -> list[str]:
        pattern = ref.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "#%"
        rows = self._query(f"SELECT doc_id FROM {self.tables.docs} WHERE doc_id = :r OR source = :r OR "
                           "source LIKE :p ESCAPE '\\'", {"r": ref, "p": pattern})
        return [r["doc_id"] for r in rows]

    def live_documents(self) -> list[dict[str, Any]]:
        return [dict(r) for r in self._query(
            f"SELECT row_id, doc_id, source, title, format, metadata::text AS metadata, fingerprint, content_hash, "
            f"text, n_chunks, ingested_at, added_gen FROM {self.tables.docs} ORDER BY row_id")]

    # -- the write --------------------------------------------------------------------------------
    def commit(self, upserts: Sequence[PreparedDocument] = (), deletes: Sequence[str] = (), *,
               replace_all: bool = False, config: dict[str, Any] | None = None,
               report: dict[str, Any] | None = None) -> int:
        """Write one new generation and publish it (one transaction); returns its number."""
        config = config or self.config()
        dim = int(config["embedder"]["dim"])
        for doc in upserts:
            if doc.vectors.shape != (len(doc.chunks), dim):
                raise ValueError(f"document {doc.doc_id}: {doc.vectors.shape} vectors for {len(doc.chunks)} "
                                 f"chunks of dimension {dim}")
        s, now = self.generation + 1, time.time()
        old = self.tables
        with self.conn.begin():
            raw = ensure_vector(self.conn)
            self._generation_row(s, now, config)
            rebuild = replace_all or dim != int(self.manifest["embedder"]["dim"])
            target = old.next() if rebuild else old
            if rebuild:
                tables.create_tables(self.conn, target, dim, with_indexes=False)
                if not replace_all:
                    self._carry_over(old, target, exclude=[*deletes, *(d.doc_id for d in upserts)])
            else:
                gone = [*deletes, *(d.doc_id for d in upserts)]
                if gone:
                    self.conn.execute(sa.text(f"DELETE FROM {old.docs} WHERE doc_id = ANY(:ids)"), {"ids": gone})
            self._insert(raw, target, _prepared_rows(upserts, s, now), s)
            counts = self._counts(target)
            kind, params = self.manifest["vectors"]["kind"], dict(self.manifest["vectors"].get("params", {}))
            spec = _vector_spec(config)
            if not rebuild and tables.needs_rebuild(spec, kind, params, counts["chunks"]):
                kind, params = tables.plan_ann(spec, counts["chunks"])  # e.g. IVF outgrew its training
                tables.replace_ann(self.conn, target, kind, params, memory_mb=self.store.owner.build_memory_mb,
                                   workers=self.store.owner.build_workers)
            elif rebuild:
                tables.finish_tables(self.conn, target)
                kind, params = tables.plan_ann(spec, counts["chunks"])
                tables.build_ann(self.conn, target, kind, params, memory_mb=self.store.owner.build_memory_mb,
                                 workers=self.store.owner.build_workers)
                tables.analyze(self.conn, target)
            elif kind == "hnsw":
                params["ef_search"] = spec.ef_search  # query-time only: no rebuild
            elif kind == "ivf":
                params["probes"] = min(spec.nprobe, int(params["lists"]))
            if report is not None:
                self._log(s, report, now)
            self._publish(s, target, config, kind, params, counts)
        faults.point("pg_committed")
        self._after_commit(old, target)
        return s

    def load(self, export: Any, progress: Any = None) -> int:
        """Fill this new, empty index with ``export`` (chunk ids kept) as one generation: COPY into the
        next epoch's tables, indexes built once at the end, one transaction."""
        if self.manifest["counts"]["chunks"] or self.manifest["counts"]["documents"]:
            raise ConflictError(f"index {self.store.name!r} is not empty", fix="copy into a new index")
        config, s, now = export.config, self.generation + 1, time.time()
        old, target = self.tables, self.tables.next()
        counted = {"documents": 0, "chunks": 0}

        def rows() -> Iterator[tuple[dict[str, Any], list[dict[str, Any]], np.ndarray]]:
            for doc in export.documents:
                counted["documents"] += 1
                counted["chunks"] += len(doc.chunks)
                if progress:
                    progress("copied", documents=counted["documents"], chunks=counted["chunks"])
                yield doc.row, doc.chunks, doc.vectors

        with self.conn.begin():
            raw = ensure_vector(self.conn)
            self._generation_row(s, now, config)
            tables.create_tables(self.conn, target, int(config["embedder"]["dim"]), with_indexes=False)
            self._insert(raw, target, rows(), s, keep_chunk_ids=True)
            self.conn.execute(sa.text(f"SELECT setval('{target.chunk_seq}', greatest((SELECT max(id) FROM "
                                      f"{target.chunks}), (SELECT last_value FROM {target.chunk_seq})))"))
            if progress:
                progress("indexing", chunks=counted["chunks"])
            tables.finish_tables(self.conn, target)
            kind, params = tables.plan_ann(_vector_spec(config), counted["chunks"])
            tables.build_ann(self.conn, target, kind, params, memory_mb=self.store.owner.build_memory_mb,
                             workers=self.store.owner.build_workers)
            tables.analyze(self.conn, target)
            for entry in export.ingests:
                self._log(s, {**entry, "scrub": _scrub_map(entry.get("scrub", []))}, float(entry.get("at", now)))
            self._log(s, {"kind": "copy", "added": counted["documents"], "chunks": counted["chunks"]}, now)
            self._publish(s, target, config, kind, params, self._counts(target))
        faults.point("pg_committed")
        self._after_commit(old, target)
        return s

    # -- pieces of a write --------------------------------------------------------------------------
    def _generation_row(self, s: int, now: float, config: dict[str, Any]) -> None:
        self.conn.execute(sa.text("INSERT INTO vector_index_generations (index_id, gen, created_at, config_json) "
                                  "VALUES (:i, :g, :t, :c)"),
                          {"i": self.store.index_id, "g": s, "t": now, "c": json.dumps(config, sort_keys=True)})

    def _carry_over(self, old: tables.Tables, new: tables.Tables, *, exclude: list[str]) -> None:
        """Copy the rows that stay from the published epoch into the next one (ids kept)."""
        params = {"ex": exclude}
        self.conn.execute(sa.text(f"INSERT INTO {new.docs} SELECT * FROM {old.docs} WHERE NOT (doc_id = ANY(:ex))"),
                          params)
        self.conn.execute(sa.text(
            f"INSERT INTO {new.chunks} ({tables_columns()}) SELECT {tables_columns('c.')} FROM {old.chunks} c "
            f"JOIN {new.docs} d ON d.row_id = c.doc_row"))

    def _insert(self, raw: Any, t: tables.Tables, docs: Iterable[tuple[dict[str, Any], list[dict[str, Any]],
                                                                      np.ndarray]],
                s: int, *, keep_chunk_ids: bool = False) -> None:
        """COPY documents and their chunks (binary; vectors as pgvector's binary format)."""
        from psycopg.types.json import Jsonb

        batch: list[tuple[dict[str, Any], list[dict[str, Any]], np.ndarray]] = []

        def flush() -> None:
            n_docs = len(batch)
            n_chunks = sum(len(c) for _, c, _ in batch)
            doc_ids = self._ids(raw, t.doc_seq, n_docs)
            chunk_ids = [] if keep_chunk_ids else self._ids(raw, t.chunk_seq, n_chunks)
            with raw.cursor() as cur:
                with cur.copy(f"COPY {t.docs} ({', '.join(DOC_FIELDS)}) FROM STDIN (FORMAT BINARY)") as copy:
                    copy.set_types(DOC_TYPES)
                    for row_id, (row, _, _) in zip(doc_ids, batch):
                        copy.write_row((row_id, row["doc_id"], row["source"], row["title"], row["format"],
                                        Jsonb(row["metadata"]), row["fingerprint"], row["content_hash"], row["text"],
                                        int(row["n_chunks"]), float(row["ingested_at"]), s))
                faults.point("pg_write")
                with cur.copy(f"COPY {t.chunks} ({CHUNK_FIELDS}) FROM STDIN (FORMAT BINARY)") as copy:
                    copy.set_types(CHUNK_TYPES)
                    it = iter(chunk_ids)
                    for row_id, (_, chunks, vectors) in zip(doc_ids, batch):
                        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
                        for i, c in enumerate(chunks):
                            copy.write_row((c["id"] if keep_chunk_ids else next(it), row_id, c["ordinal"], c["start"],
                                            c["end"], json.dumps(list(c["heading_path"])), c["tokens"], c["text"],
                                            vectors[i], s))
            batch.clear()

        chunks_in_batch = 0
        for item in docs:
            batch.append(item)
            chunks_in_batch += len(item[1])
            if chunks_in_batch >= 8192:
                flush()
                chunks_in_batch = 0
        if batch:
            flush()

    @staticmethod
    def _ids(raw: Any, seq: str, n: int) -> list[int]:
        if n == 0:
            return []
        with raw.cursor() as cur:
            cur.execute(f"SELECT nextval('{seq}') FROM generate_series(1, %s)", (n,))
            return [r[0] for r in cur.fetchall()]

    def _counts(self, t: tables.Tables) -> dict[str, int]:
        docs = self.conn.execute(sa.text(f"SELECT count(*) FROM {t.docs}")).scalar_one()
        chunks = self.conn.execute(sa.text(f"SELECT count(*) FROM {t.chunks}")).scalar_one()
        return {"documents": int(docs), "chunks": int(chunks)}

    def _log(self, gen: int, report: dict[str, Any], now: float) -> None:
        def count(v: Any) -> int:
            return len(v) if isinstance(v, (list, tuple)) else int(v)

        failures = report.get("failures", [])
        ingest_id = self.conn.execute(sa.text(
            "INSERT INTO vector_index_ingests (index_id, gen, kind, at, added, updated, unchanged, deleted, failed, "
            "chunks, failures_json) VALUES (:i, :g, :k, :at, :a, :u, :n, :d, :f, :c, :j) RETURNING id"),
            {"i": self.store.index_id, "g": gen, "k": report.get("kind", "ingest"), "at": now,
             "a": count(report.get("added", 0)), "u": count(report.get("updated", 0)),
             "n": count(report.get("unchanged", 0)), "d": count(report.get("deleted", 0)),
             "f": report.get("failed", len(failures)), "c": report.get("chunks", 0),
             "j": json.dumps(failures)}).scalar_one()
        scrub = [{"i": ingest_id, "d": doc_id, "e": entity, "n": n}
                 for doc_id, counts in report.get("scrub", {}).items() for entity, n in counts.items() if n]
        if scrub:
            self.conn.execute(sa.text("INSERT INTO vector_index_scrub_counts (ingest_id, doc_id, entity, count) "
                                      "VALUES (:i, :d, :e, :n)"), scrub)

    def _publish(self, s: int, t: tables.Tables, config: dict[str, Any], kind: str, params: dict[str, Any],
                 counts: dict[str, int]) -> None:
        manifest = manifest_of(self.store.name, s, config, kind, params, counts,
                               created_at=self.manifest.get("created_at", time.time()))
        faults.point("pg_commit")
        self.conn.execute(sa.text("UPDATE vector_indexes SET generation = :g, epoch = :e, manifest_json = :m, "
                                  "updated_at = :t WHERE id = :i"),
                          {"g": s, "e": t.epoch, "m": json.dumps(manifest), "t": time.time(),
                           "i": self.store.index_id})
        # generations two behind are read by nobody: keep the table small
        self.conn.execute(sa.text("DELETE FROM vector_index_generations WHERE index_id = :i AND gen < :g - 1"),
                          {"i": self.store.index_id, "g": s})
        self._pending = (s, t, manifest)

    def _after_commit(self, old: tables.Tables, new: tables.Tables) -> None:
        s, t, manifest = self._pending
        self.row = {**self.row, "generation": s, "epoch": t.epoch, "manifest_json": json.dumps(manifest)}
        self.manifest, self.tables = manifest, t
        if new.epoch != old.epoch:
            faults.point("cleanup")
            if not self._drop_epoch(old.epoch):
                log.info("index %s: epoch %d still read; the next write drops it", self.store.name, old.epoch)

    def close(self) -> None:
        pass


def tables_columns(prefix: str = "") -> str:
    return ", ".join(f'{prefix}"{c.strip().strip(chr(34))}"' for c in CHUNK_FIELDS.split(","))


def _prepared_rows(upserts: Sequence[PreparedDocument], s: int, now: float
                   ) -> Iterator[tuple[dict[str, Any], list[dict[str, Any]], np.ndarray]]:
    for doc in upserts:
        faults.point("pg_write")
        row = {"doc_id": doc.doc_id, "source": doc.source, "title": doc.title, "format": doc.format,
               "metadata": json.loads(json.dumps(doc.metadata, default=str)), "fingerprint": doc.fingerprint,
               "content_hash": doc.content_hash, "text": doc.text, "n_chunks": len(doc.chunks), "ingested_at": now}
        chunks = [{"ordinal": c.ordinal, "start": c.start, "end": c.end, "heading_path": list(c.heading_path),
                   "tokens": c.tokens, "text": c.text} for c in doc.chunks]
        yield row, chunks, doc.vectors



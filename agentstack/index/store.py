"""One index on disk, and the only code that writes it.

Folder ``<data_dir>/indexes/<name>/``::

    manifest.json          the published version: generation, FAISS file, embedder id + dim, counts
    index.db               SQLite (WAL): generations, documents, chunks (+ vectors), FTS5, ingest log
    vectors/<gen>.faiss    one FAISS file per published generation (the current and the previous)
    spec.json              the resolved spec the index was created with
    .lock                  writers hold it (filelock); readers never take it

How a write stays crash-safe (see docs/ingestion.md):

1. Every write is one SQLite transaction that creates generation ``s = published + 1``. Rows are
   never updated in place: a new document/chunk row carries ``added_gen = s``; a replaced or
   deleted one gets ``removed_gen = s``. Chunk ids are ``AUTOINCREMENT`` and are the FAISS ids.
   The generation row stores the index configuration (embedder id/dim, chunking, vectors, PII
   policy) it was written with.
2. After COMMIT, the FAISS index is brought from the published generation to ``s`` (vectors come
   from SQLite), written as ``vectors/<s>.faiss`` (temp file, fsync, rename).
3. ``manifest.json`` is rewritten the same way. That rename is the publish: readers follow the
   manifest and filter rows by its generation, so they see either the old or the new version,
   never a mix, and pick up a new one on their next query without a restart.
4. A crash anywhere leaves SQLite at ``s`` or ``s - 1``. A writer opening the index rolls an
   unpublished generation forward (steps 2-3 from SQLite alone); readers meanwhile keep using
   the published one. Rows removed two generations ago are purged inside the next transaction.

This module knows nothing about loading, scrubbing, chunking or embedding.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from agentstack.errors import ConflictError, NotFoundError
from agentstack.index import faults
from agentstack.index.vectors import VectorIndex
from agentstack.ingest.documents import PreparedDocument
from agentstack.storage.files import atomic_write_bytes, atomic_write_json, clean_temp, fsync_dir, read_json
from agentstack.storage.sqlite import Database, Migration, connect, migrate, sql, transaction

log = logging.getLogger(__name__)

FORMAT = 1
MANIFEST, DB, SPEC, LOCK, VECTORS = "manifest.json", "index.db", "spec.json", ".lock", "vectors"
_FAISS_RE = re.compile(r"^(\d{10})\.faiss$")

MIGRATIONS = [
    Migration("0001_index_schema", sql(
        "CREATE TABLE generations (gen INTEGER PRIMARY KEY, created_at REAL NOT NULL, config TEXT NOT NULL)",
        """CREATE TABLE documents (
            row_id INTEGER PRIMARY KEY AUTOINCREMENT, doc_id TEXT NOT NULL, source TEXT NOT NULL,
            title TEXT NOT NULL, format TEXT NOT NULL, metadata TEXT NOT NULL, fingerprint TEXT NOT NULL,
            content_hash TEXT NOT NULL, text TEXT NOT NULL, n_chunks INTEGER NOT NULL, ingested_at REAL NOT NULL,
            added_gen INTEGER NOT NULL, removed_gen INTEGER)""",
        "CREATE UNIQUE INDEX documents_live ON documents(doc_id) WHERE removed_gen IS NULL",
        "CREATE INDEX documents_doc ON documents(doc_id)",
        "CREATE INDEX documents_source ON documents(source)",
        "CREATE INDEX documents_removed ON documents(removed_gen)",
        """CREATE TABLE chunks (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            doc_row INTEGER NOT NULL REFERENCES documents(row_id) ON DELETE CASCADE,
            ordinal INTEGER NOT NULL, start INTEGER NOT NULL, "end" INTEGER NOT NULL, heading TEXT NOT NULL,
            tokens INTEGER NOT NULL, text TEXT NOT NULL, vector BLOB NOT NULL,
            added_gen INTEGER NOT NULL, removed_gen INTEGER)""",
        "CREATE INDEX chunks_doc ON chunks(doc_row)",
        "CREATE INDEX chunks_added ON chunks(added_gen)",
        "CREATE INDEX chunks_removed ON chunks(removed_gen)",
        "CREATE VIRTUAL TABLE chunks_fts USING fts5(text, heading, content='chunks', content_rowid='id', "
        "tokenize='porter unicode61')",
        "CREATE TRIGGER chunks_ai AFTER INSERT ON chunks BEGIN "
        "INSERT INTO chunks_fts(rowid, text, heading) VALUES (new.id, new.text, new.heading); END",
        "CREATE TRIGGER chunks_ad AFTER DELETE ON chunks BEGIN "
        "INSERT INTO chunks_fts(chunks_fts, rowid, text, heading) VALUES ('delete', old.id, old.text, old.heading); "
        "END",
        """CREATE TABLE ingests (
            id INTEGER PRIMARY KEY AUTOINCREMENT, gen INTEGER NOT NULL, kind TEXT NOT NULL, at REAL NOT NULL,
            added INTEGER NOT NULL, updated INTEGER NOT NULL, unchanged INTEGER NOT NULL, deleted INTEGER NOT NULL,
            failed INTEGER NOT NULL, chunks INTEGER NOT NULL, failures TEXT NOT NULL)""",
        """CREATE TABLE scrub_counts (
            ingest_id INTEGER NOT NULL REFERENCES ingests(id) ON DELETE CASCADE, doc_id TEXT NOT NULL,
            entity TEXT NOT NULL, count INTEGER NOT NULL, PRIMARY KEY (ingest_id, doc_id, entity))""",
    )),
]


def live(alias: str, gen: str = ":g") -> str:
    """SQL condition: row ``alias`` is part of generation ``gen``."""
    return f"{alias}.added_gen <= {gen} AND ({alias}.removed_gen IS NULL OR {alias}.removed_gen > {gen})"


class EmbedderMismatchError(ConflictError):
    code = "embedder_mismatch"


def check_embedder(manifest: dict[str, Any], embedder_id: str, dim: int | None = None) -> None:
    """Refuse vectors from another embedder than the one that built the index (``dim`` None:
    compare ids only, e.g. before the model is loaded; one id always has one dimension)."""
    want = manifest["embedder"]
    if want["id"] != embedder_id or (dim is not None and int(want["dim"]) != int(dim)):
        raise EmbedderMismatchError(
            f"index {manifest['name']!r} was built with embedder {want['id']!r} (dim {want['dim']}); "
            f"this one is {embedder_id!r}" + (f" (dim {dim})" if dim is not None else "") +
            ", whose vectors are not comparable",
            fix=f"use the index's embedder (embedder.model in its spec or AGENTSTACK_EMBEDDER__MODEL), or "
                f"re-embed it with `agentstack index rebuild {manifest['name']}`")


@dataclass(frozen=True)
class Snapshot:
    """What a reader uses: one published generation and its vectors."""

    generation: int
    manifest: dict[str, Any]
    vectors: VectorIndex


class LocalStore:
    """An index folder: read access for anyone, writes through :meth:`writer` (the ``faiss``
    implementation of :class:`agentstack.index.backend.IndexStore`)."""

    backend = "faiss"

    def __init__(self, path: Path):
        self.path = Path(path)
        self.name = self.path.name
        self._db: Database | None = None
        self._snap: Snapshot | None = None
        self._snap_key: tuple | None = None
        self._lock = threading.Lock()
        if not (self.path / MANIFEST).is_file():
            raise NotFoundError(f"index {self.name!r} does not exist (no {self.path / MANIFEST})",
                                fix="list indexes with `agentstack index list`, or create it with "
                                    f"`agentstack index create {self.name} PATH...`")

    # -- creation -------------------------------------------------------------------------------
    @classmethod
    def create(cls, root: Path, name: str, *, spec: dict[str, Any], config: dict[str, Any]) -> LocalStore:
        """Create the folder atomically (built under a temporary name, then renamed)."""
        root = Path(root)
        final = root / name
        if (final / MANIFEST).exists():
            raise ConflictError(f"index {name!r} already exists", fix=f"add documents with `agentstack index add "
                                f"{name} PATH...`, or pick another name")
        root.mkdir(parents=True, exist_ok=True)
        tmp = root / f".tmp-create-{name}-{uuid.uuid4().hex[:8]}"
        (tmp / VECTORS).mkdir(parents=True)
        try:
            atomic_write_json(tmp / SPEC, spec)
            conn = connect(tmp / DB, synchronous="FULL")
            try:
                migrate(conn, MIGRATIONS)
                with transaction(conn):
                    conn.execute("INSERT INTO generations (gen, created_at, config) VALUES (0, ?, ?)",
                                 (time.time(), json.dumps(config, sort_keys=True)))
            finally:
                conn.close()
            empty = VectorIndex.empty(int(config["embedder"]["dim"]), vector_spec(config))
            atomic_write_bytes(tmp / VECTORS / _faiss_name(0), empty.serialize())
            atomic_write_json(tmp / MANIFEST, _manifest(name, 0, config, empty, {"documents": 0, "chunks": 0},
                                                        created_at=time.time()))
            try:
                if final.exists():
                    final.rmdir()  # only an empty leftover folder can be replaced
                os.rename(tmp, final)
            except OSError:
                raise ConflictError(f"index {name!r} already exists (created by another process meanwhile, or "
                                    f"{final} is a non-empty folder that is not an index)",
                                    fix="use the existing index, or remove the folder") from None
            fsync_dir(root)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return cls(final)

    # -- reading --------------------------------------------------------------------------------
    @property
    def manifest_path(self) -> Path:
        return self.path / MANIFEST

    def manifest(self) -> dict[str, Any]:
        manifest = read_json(self.manifest_path)
        if manifest is None:
            raise NotFoundError(f"index {self.name!r} has no manifest", fix="it was deleted; create it again")
        if manifest.get("format") != FORMAT:
            raise ConflictError(f"index {self.name!r} has manifest format {manifest.get('format')!r}; this "
                                f"agentstack reads format {FORMAT}", fix="upgrade agentstack or rebuild the index")
        return manifest

    def spec(self) -> dict[str, Any]:
        return read_json(self.path / SPEC, {}) or {}

    def set_spec(self, spec: dict[str, Any]) -> None:
        atomic_write_json(self.path / SPEC, spec)

    def alive(self) -> bool:
        return (self.path / MANIFEST).is_file()

    def location(self) -> str:
        return str(self.path)

    # -- the reads of the index protocol (local_read.py) ------------------------------------------
    def search(self, query: Any, embedder: Any | None) -> list[Any]:
        from agentstack.index import local_read

        return local_read.search(self, query, embedder)

    def documents(self, *, offset: int = 0, limit: int = 100, source_prefix: str | None = None
                  ) -> tuple[list[dict[str, Any]], int]:
        from agentstack.index import local_read

        return local_read.documents(self, offset=offset, limit=limit, source_prefix=source_prefix)

    def document(self, doc_id: str, *, with_text: bool = False) -> dict[str, Any] | None:
        from agentstack.index import local_read

        return local_read.document(self, doc_id, with_text=with_text)

    def chunk(self, chunk_id: int) -> dict[str, Any] | None:
        from agentstack.index import local_read

        return local_read.chunk(self, chunk_id)

    def stats(self) -> dict[str, Any]:
        from agentstack.index import local_read

        return local_read.stats(self)

    def export(self) -> Any:
        from agentstack.index import local_read

        return local_read.export(self)

    def verify(self) -> Any:
        from agentstack.index.verify import verify

        return verify(self)

    @property
    def db(self) -> Database:
        """Per-thread read connections (no migrations: only writers migrate)."""
        if self._db is None:
            self._db = Database(self.path / DB)
        return self._db

    def _manifest_key(self) -> tuple:
        st = os.stat(self.manifest_path)
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def snapshot(self) -> Snapshot:
        """The published generation, reloaded when the manifest changed since the last call."""
        try:
            key = self._manifest_key()
        except FileNotFoundError:
            raise NotFoundError(f"index {self.name!r} was deleted", fix="create it again") from None
        if self._snap is not None and key == self._snap_key:
            return self._snap
        with self._lock:
            for _ in range(10):
                key = self._manifest_key()
                if self._snap is not None and key == self._snap_key:
                    return self._snap
                manifest = self.manifest()
                if self._snap is not None and manifest["generation"] == self._snap.generation:
                    self._snap_key = key
                    return self._snap
                try:
                    vectors = VectorIndex.load(self.path / manifest["faiss_file"], int(manifest["embedder"]["dim"]),
                                               manifest["vectors"]["kind"], manifest["vectors"].get("params", {}))
                except (FileNotFoundError, RuntimeError):
                    time.sleep(0.05)  # a writer published and cleaned up meanwhile: read the manifest again
                    continue
                self._snap = Snapshot(int(manifest["generation"]), manifest, vectors)
                self._snap_key = key
                return self._snap
        raise ConflictError(f"index {self.name!r}: could not load a consistent version",
                            fix=f"run `agentstack index verify {self.name}`")

    # -- writing --------------------------------------------------------------------------------
    @contextlib.contextmanager
    def writer(self, timeout: float = 30.0) -> Iterator[LocalWriter]:
        """Hold the write lock (waiting up to ``timeout`` s), recover, and yield the writer."""
        from filelock import FileLock, Timeout

        lock = FileLock(str(self.path / LOCK))
        try:
            lock.acquire(timeout=timeout)
        except Timeout:
            raise ConflictError(f"index {self.name!r} is being written by another process",
                                fix="wait for that ingest to finish and run the command again") from None
        writer = None
        try:
            writer = LocalWriter(self)
            writer.recover()
            yield writer
        finally:
            if writer is not None:
                writer.close()
            lock.release()

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None


def _faiss_name(gen: int) -> str:
    return f"{gen:010d}.faiss"


def vector_spec(config: dict[str, Any]) -> Any:
    from agentstack.index.spec import VectorSpec

    return VectorSpec.model_validate(config["vectors"])


def _manifest(name: str, gen: int, config: dict[str, Any], vectors: VectorIndex, counts: dict[str, int], *,
              created_at: float) -> dict[str, Any]:
    from agentstack import __version__

    return {"format": FORMAT, "name": name, "generation": gen, "faiss_file": f"{VECTORS}/{_faiss_name(gen)}",
            "embedder": config["embedder"], "chunking": config["chunking"], "pii_policy": config["pii_policy"],
            "vectors": {"requested": config["vectors"], "kind": vectors.kind, "params": vectors.params},
            "counts": counts, "created_at": created_at, "updated_at": time.time(), "agentstack_version": __version__}


def _count(value: Any) -> int:
    """An ingest log count: a number, or the list of document ids it counts."""
    return len(value) if isinstance(value, (list, tuple)) else int(value)


def scrub_map(rows: Sequence[dict[str, Any]]) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for r in rows:
        out.setdefault(r["doc_id"], {})[r["entity"]] = int(r["count"])
    return out


def _vectors_of(rows: Sequence[Any], dim: int) -> tuple[np.ndarray, np.ndarray]:
    ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
    if not rows:
        return ids, np.empty((0, dim), np.float32)
    return ids, np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float32).reshape(len(rows), dim)


class LocalWriter:
    """Write access to one index; only :meth:`LocalStore.writer` makes one (with the lock held)."""

    def __init__(self, store: LocalStore):
        self.store = store
        self.conn = connect(store.path / DB, synchronous="FULL")
        migrate(self.conn, MIGRATIONS)
        self.manifest = store.manifest()
        self._vectors: VectorIndex | None = None  # at the published generation, once loaded
        self.notes: list[str] = []  # what recover() did

    @property
    def generation(self) -> int:
        return int(self.manifest["generation"])

    def config(self, gen: int | None = None) -> dict[str, Any]:
        row = self.conn.execute("SELECT config FROM generations WHERE gen = ?",
                                (self.generation if gen is None else gen,)).fetchone()
        return json.loads(row[0])

    def _sqlite_generation(self) -> int:
        return int(self.conn.execute("SELECT max(gen) FROM generations").fetchone()[0])

    def recover(self) -> list[str]:
        """Finish or clean up what an interrupted writer left; returns what was done."""
        notes = []
        removed = clean_temp(self.store.path) + clean_temp(self.store.path / VECTORS)
        if removed:
            notes.append(f"removed {removed} temporary file(s) of an interrupted write")
        pending = self._sqlite_generation()
        if pending > self.generation:
            self._publish(pending)
            notes.append(f"published generation {pending}, committed by an interrupted write")
        elif pending < self.generation:
            raise ConflictError(f"index {self.store.name!r}: index.db is at generation {pending} but the manifest "
                                f"says {self.generation}; the database was replaced or damaged",
                                fix=f"run `agentstack index verify {self.store.name}`, then delete and recreate it")
        self._cleanup_files()
        for note in notes:
            log.warning("index %s: %s", self.store.name, note)
        self.notes = notes
        return notes

    # -- queries a writer needs -----------------------------------------------------------------
    def fingerprints(self, doc_ids: Sequence[str]) -> dict[str, str]:
        out: dict[str, str] = {}
        ids = list(doc_ids)
        for i in range(0, len(ids), 500):
            part = ids[i:i + 500]
            rows = self.conn.execute(
                f"SELECT doc_id, fingerprint FROM documents WHERE removed_gen IS NULL AND doc_id IN "
                f"({','.join('?' * len(part))})", part).fetchall()
            out.update({r[0]: r[1] for r in rows})
        return out

    def resolve(self, ref: str) -> list[str]:
        """Live doc ids matching a document id or a source."""
        rows = self.conn.execute("SELECT doc_id FROM documents WHERE removed_gen IS NULL AND (doc_id = ? OR "
                                 "source = ? OR source LIKE ? ESCAPE '\\')",
                                 (ref, ref, ref.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
                                  + "#%")).fetchall()
        return [r[0] for r in rows]

    def live_documents(self) -> list[Any]:
        return self.conn.execute("SELECT * FROM documents WHERE removed_gen IS NULL ORDER BY row_id").fetchall()

    # -- the write ------------------------------------------------------------------------------
    def commit(self, upserts: Sequence[PreparedDocument] = (), deletes: Sequence[str] = (), *,
               replace_all: bool = False, config: dict[str, Any] | None = None,
               report: dict[str, Any] | None = None) -> int:
        """Write one new generation and publish it; returns its number. ``config`` replaces the
        index configuration (a rebuild); ``report`` is the ingest log entry to record with it."""
        if self._sqlite_generation() > self.generation:  # an earlier publish failed: finish it first
            self._publish(self._sqlite_generation())
        config = config or self.config()
        dim = int(config["embedder"]["dim"])
        s = self.generation + 1
        now = time.time()
        with transaction(self.conn):
            self.conn.execute("INSERT INTO generations (gen, created_at, config) VALUES (?, ?, ?)",
                              (s, now, json.dumps(config, sort_keys=True)))
            if replace_all:
                self.conn.execute("UPDATE documents SET removed_gen = ? WHERE removed_gen IS NULL", (s,))
                self.conn.execute("UPDATE chunks SET removed_gen = ? WHERE removed_gen IS NULL", (s,))
            for doc_id in deletes:
                self._retire(doc_id, s)
            for doc in upserts:
                faults.point("sqlite_write")
                if doc.vectors.shape != (len(doc.chunks), dim):
                    raise ValueError(f"document {doc.doc_id}: {doc.vectors.shape} vectors for {len(doc.chunks)} "
                                     f"chunks of dimension {dim}")
                self._retire(doc.doc_id, s)
                row = self.conn.execute(
                    "INSERT INTO documents (doc_id, source, title, format, metadata, fingerprint, content_hash, text,"
                    " n_chunks, ingested_at, added_gen) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (doc.doc_id, doc.source, doc.title, doc.format, json.dumps(doc.metadata, default=str),
                     doc.fingerprint, doc.content_hash, doc.text, len(doc.chunks), now, s)).lastrowid
                vectors = np.ascontiguousarray(doc.vectors, dtype=np.float32)
                self.conn.executemany(
                    'INSERT INTO chunks (doc_row, ordinal, start, "end", heading, tokens, text, vector, added_gen) '
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [(row, c.ordinal, c.start, c.end, json.dumps(list(c.heading_path)), c.tokens, c.text,
                      vectors[i].tobytes(), s) for i, c in enumerate(doc.chunks)])
            # rows retired before the previous generation are invisible to every reader: purge them
            self.conn.execute("DELETE FROM chunks WHERE removed_gen IS NOT NULL AND removed_gen < ?", (s,))
            self.conn.execute("DELETE FROM documents WHERE removed_gen IS NOT NULL AND removed_gen < ?", (s,))
            if report is not None:
                self._log(s, report, now)
            faults.point("sqlite_commit")
        faults.point("sqlite_committed")
        self._publish(s)
        return s

    def load(self, export: Any, progress: Any = None) -> int:
        """Fill this new, empty index with ``export`` (another index's content, chunk ids kept) as
        one generation: one SQLite transaction, then one publish."""
        if self._sqlite_generation() > self.generation:
            self._publish(self._sqlite_generation())
        if self.conn.execute("SELECT count(*) FROM chunks").fetchone()[0]:
            raise ConflictError(f"index {self.store.name!r} is not empty", fix="copy into a new index")
        s, now = self.generation + 1, time.time()
        dim, docs, chunks = int(export.config["embedder"]["dim"]), 0, 0
        with transaction(self.conn):
            self.conn.execute("INSERT INTO generations (gen, created_at, config) VALUES (?, ?, ?)",
                              (s, now, json.dumps(export.config, sort_keys=True)))
            for doc in export.documents:
                faults.point("sqlite_write")
                r = doc.row
                row = self.conn.execute(
                    "INSERT INTO documents (doc_id, source, title, format, metadata, fingerprint, content_hash, text,"
                    " n_chunks, ingested_at, added_gen) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (r["doc_id"], r["source"], r["title"], r["format"], json.dumps(r["metadata"], default=str),
                     r["fingerprint"], r["content_hash"], r["text"], r["n_chunks"], r["ingested_at"], s)).lastrowid
                vectors = np.ascontiguousarray(doc.vectors, dtype=np.float32).reshape(len(doc.chunks), dim)
                self.conn.executemany(
                    'INSERT INTO chunks (id, doc_row, ordinal, start, "end", heading, tokens, text, vector, added_gen)'
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [(c["id"], row, c["ordinal"], c["start"], c["end"], json.dumps(list(c["heading_path"])),
                      c["tokens"], c["text"], vectors[i].tobytes(), s) for i, c in enumerate(doc.chunks)])
                docs, chunks = docs + 1, chunks + len(doc.chunks)
                if progress:
                    progress("copied", documents=docs, chunks=chunks)
            for entry in export.ingests:
                self._log(s, {**entry, "failures": entry.get("failures", []),
                              "scrub": scrub_map(entry.get("scrub", []))}, float(entry.get("at", now)))
            self._log(s, {"kind": "copy", "added": docs, "chunks": chunks}, now)
            faults.point("sqlite_commit")
        faults.point("sqlite_committed")
        self._publish(s)
        return s

    def _retire(self, doc_id: str, gen: int) -> None:
        row = self.conn.execute("SELECT row_id FROM documents WHERE doc_id = ? AND removed_gen IS NULL",
                                (doc_id,)).fetchone()
        if row is not None:
            self.conn.execute("UPDATE documents SET removed_gen = ? WHERE row_id = ?", (gen, row[0]))
            self.conn.execute("UPDATE chunks SET removed_gen = ? WHERE doc_row = ? AND removed_gen IS NULL",
                              (gen, row[0]))

    def _log(self, gen: int, report: dict[str, Any], now: float) -> None:
        failures = report.get("failures", [])
        ingest_id = self.conn.execute(
            "INSERT INTO ingests (gen, kind, at, added, updated, unchanged, deleted, failed, chunks, failures) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (gen, report.get("kind", "ingest"), now, _count(report.get("added", 0)), _count(report.get("updated", 0)),
             _count(report.get("unchanged", 0)), _count(report.get("deleted", 0)),
             report.get("failed", len(failures)), report.get("chunks", 0), json.dumps(failures))).lastrowid
        self.conn.executemany(
            "INSERT INTO scrub_counts (ingest_id, doc_id, entity, count) VALUES (?, ?, ?, ?)",
            [(ingest_id, doc_id, entity, n) for doc_id, counts in report.get("scrub", {}).items()
             for entity, n in counts.items() if n])

    # -- publishing -----------------------------------------------------------------------------
    def _publish(self, s: int) -> None:
        config = self.config(s)
        faults.point("faiss_sync")
        try:
            vectors = self._sync_vectors(s, config)
            faults.point("faiss_write")
            atomic_write_bytes(self.store.path / VECTORS / _faiss_name(s), vectors.serialize())
        except BaseException:
            self._vectors = None  # it may be half-changed; reload from the published file next time
            raise
        faults.point("faiss_written")
        counts = {
            "documents": self.conn.execute(f"SELECT count(*) FROM documents d WHERE {live('d', '?')}",
                                           (s, s)).fetchone()[0],
            "chunks": self.conn.execute(f"SELECT count(*) FROM chunks c WHERE {live('c', '?')}", (s, s)).fetchone()[0],
        }
        manifest = _manifest(self.store.name, s, config, vectors, counts,
                             created_at=self.manifest.get("created_at", time.time()))
        faults.point("manifest_write")
        atomic_write_json(self.store.manifest_path, manifest)
        faults.point("published")
        self.manifest = manifest
        self._vectors = vectors
        faults.point("cleanup")
        self._cleanup_files()

    def _load_published(self) -> VectorIndex | None:
        m = self.manifest
        try:
            return VectorIndex.load(self.store.path / m["faiss_file"], int(m["embedder"]["dim"]),
                                    m["vectors"]["kind"], m["vectors"].get("params", {}))
        except (FileNotFoundError, RuntimeError, ValueError) as exc:
            log.warning("index %s: published vectors unreadable (%s); rebuilding from SQLite", self.store.name,
                        type(exc).__name__)
            return None

    def _sync_vectors(self, s: int, config: dict[str, Any]) -> VectorIndex:
        """The published FAISS index brought to generation ``s``, from SQLite."""
        m = self.generation
        dim = int(config["embedder"]["dim"])
        spec = vector_spec(config)
        if self._vectors is None and m == s - 1:
            self._vectors = self._load_published()
        vectors = self._vectors
        if vectors is None or vectors.dim != dim or m != s - 1 or self.config(m)["vectors"] != config["vectors"]:
            return self._build_full(s, dim, spec)
        removed = np.array([r[0] for r in self.conn.execute(
            "SELECT id FROM chunks WHERE added_gen <= ? AND removed_gen > ? AND removed_gen <= ?", (m, m, s))],
            dtype=np.int64)
        live_after = self.conn.execute(f"SELECT count(*) FROM chunks c WHERE {live('c', '?')}", (s, s)).fetchone()[0]
        if vectors.needs_rebuild(spec, removing=len(removed) > 0, live_after=live_after):
            return self._build_full(s, dim, spec)
        added = self.conn.execute(
            "SELECT id, vector FROM chunks WHERE added_gen > ? AND added_gen <= ? AND "
            "(removed_gen IS NULL OR removed_gen > ?) ORDER BY id", (m, s, s)).fetchall()
        self._vectors = None  # changed in place below: not the published one any more
        vectors.remove(removed)
        vectors.add(*_vectors_of(added, dim))
        return vectors

    def _build_full(self, s: int, dim: int, spec: Any) -> VectorIndex:
        rows = self.conn.execute(f"SELECT id, vector FROM chunks c WHERE {live('c', '?')} ORDER BY id",
                                 (s, s)).fetchall()
        self._vectors = None
        return VectorIndex.build(dim, spec, *_vectors_of(rows, dim))

    def _cleanup_files(self) -> None:
        """Keep the published FAISS file and the one before it (a reader may be loading it)."""
        folder = self.store.path / VECTORS
        gens = sorted(int(m.group(1)) for p in folder.iterdir() if (m := _FAISS_RE.match(p.name)))
        keep = [g for g in gens if g <= self.generation][-2:]
        for g in gens:
            if g not in keep:
                with contextlib.suppress(FileNotFoundError):
                    (folder / _faiss_name(g)).unlink()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.conn.close()


IndexStore = LocalStore  # the names of earlier releases
IndexWriter = LocalWriter

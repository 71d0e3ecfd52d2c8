"""Consistency check of one index, as a reader sees it (no lock taken, nothing changed).

Reports every inconsistency found, not just the first: manifest vs SQLite generations, FAISS ids
vs live chunk ids, counts, chunk offsets against the stored text, ordinals, vector sizes and
norms, FAISS vectors against the stored ones (flat), FTS5 against its content table, SQLite's own
integrity check. ``issues`` are inconsistencies; ``notes`` are states a writer resolves by itself
(an unpublished generation left by an interrupted write, temporary files).
"""

from __future__ import annotations

import re
import sqlite3
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from agentstack.index.store import DB, VECTORS, IndexStore, live
from agentstack.index.vectors import VectorIndex
from agentstack.storage.sqlite import connect

_SAMPLE = 5


@dataclass
class VerifyReport:
    index: str
    issues: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    checked: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.issues

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "ok": self.ok, "issues": self.issues, "notes": self.notes,
                "checked": self.checked}


def sample(ids: Any) -> str:
    ids = sorted(int(i) for i in ids)
    return ", ".join(map(str, ids[:_SAMPLE])) + (" …" if len(ids) > _SAMPLE else "")


def verify(store: IndexStore) -> VerifyReport:
    report = VerifyReport(store.name)
    issue = report.issues.append
    try:
        manifest = store.manifest()
    except Exception as exc:  # report, do not raise: verify must describe a broken index
        issue(f"manifest unreadable: {exc}")
        return report
    g = int(manifest["generation"])
    dim = int(manifest["embedder"]["dim"])
    report.checked["generation"] = g
    conn = connect(store.path / DB)
    try:
        _check_sqlite(conn, g, report)
        live_ids = _check_rows(conn, g, dim, report)
        _check_vectors(store, manifest, conn, live_ids, report)
        docs = conn.execute(f"SELECT count(*) FROM documents d WHERE {live('d', '?')}", (g, g)).fetchone()[0]
        for what, actual in (("documents", docs), ("chunks", len(live_ids))):
            if manifest["counts"][what] != actual:
                issue(f"manifest says {manifest['counts'][what]} {what}, generation {g} has {actual}")
        report.checked.update(documents=docs, chunks=len(live_ids))
    except sqlite3.DatabaseError as exc:
        issue(f"index.db unreadable: {exc}")
    finally:
        conn.close()
    temps = [p.name for p in store.path.rglob(".tmp-*")]
    if temps:
        report.notes.append(f"{len(temps)} temporary file(s) of an interrupted write; the next write removes them")
    return report


def _check_sqlite(conn: sqlite3.Connection, g: int, report: VerifyReport) -> None:
    result = [r[0] for r in conn.execute("PRAGMA quick_check").fetchall()]
    if result != ["ok"]:
        report.issues.extend(f"sqlite: {r}" for r in result[:20])
    for row in conn.execute("PRAGMA foreign_key_check").fetchall()[:20]:
        report.issues.append(f"sqlite: row {row[1]} of {row[0]} references a missing {row[2]} row")
    top = conn.execute("SELECT max(gen) FROM generations").fetchone()[0]
    if top is None or top < g:
        report.issues.append(f"index.db is at generation {top}, behind the manifest's {g}")
    elif top == g + 1:
        report.notes.append(f"generation {top} is committed in index.db but not published (a write in progress or "
                            "interrupted); the next write publishes it")
    elif top > g + 1:
        report.issues.append(f"index.db has generations up to {top}, more than one ahead of the manifest's {g}")
    if conn.execute("SELECT 1 FROM generations WHERE gen = ?", (g,)).fetchone() is None:
        report.issues.append(f"generation {g} of the manifest is not recorded in index.db")
    try:
        conn.execute("PRAGMA busy_timeout=2000")  # the check takes the write lock briefly; do not wait long
        conn.execute("INSERT INTO chunks_fts(chunks_fts, rank) VALUES ('integrity-check', 1)")
    except sqlite3.OperationalError as exc:
        if "locked" in str(exc) or "busy" in str(exc):
            report.notes.append("full-text index not checked (a writer holds the database)")
        else:
            report.issues.append(f"full-text index does not match the chunks: {exc}")
    except sqlite3.DatabaseError as exc:
        report.issues.append(f"full-text index does not match the chunks: {exc}")


def _check_rows(conn: sqlite3.Connection, g: int, dim: int, report: VerifyReport) -> set[int]:
    issue = report.issues.append
    dup = conn.execute(f"SELECT doc_id, count(*) FROM documents d WHERE {live('d', '?')} GROUP BY doc_id "
                       "HAVING count(*) > 1", (g, g)).fetchall()
    for row in dup[:20]:
        issue(f"document {row[0]!r} has {row[1]} live versions")
    docs = {r["row_id"]: r for r in conn.execute(
        f"SELECT row_id, doc_id, text, n_chunks FROM documents d WHERE {live('d', '?')}", (g, g))}
    per_doc: dict[int, list[int]] = {row_id: [] for row_id in docs}
    live_ids: set[int] = set()
    bad_offsets, bad_vectors, orphans = [], [], []
    for row in conn.execute(f'SELECT id, doc_row, ordinal, start, "end", text, length(vector) AS vlen, vector '
                            f"FROM chunks c WHERE {live('c', '?')}", (g, g)):
        live_ids.add(row["id"])
        doc = docs.get(row["doc_row"])
        if doc is None:
            orphans.append(row["id"])
            continue
        per_doc[row["doc_row"]].append(row["ordinal"])
        if doc["text"][row["start"]:row["end"]] != row["text"]:
            bad_offsets.append(row["id"])
        if row["vlen"] != 4 * dim:
            bad_vectors.append(row["id"])
        elif abs(float(np.linalg.norm(np.frombuffer(row["vector"], dtype=np.float32))) - 1.0) > 1e-3:
            bad_vectors.append(row["id"])
    if orphans:
        issue(f"{len(orphans)} live chunk(s) belong to no live document (ids {sample(orphans)})")
    if bad_offsets:
        issue(f"{len(bad_offsets)} chunk(s) whose text is not the document text at their offsets "
              f"(ids {sample(bad_offsets)})")
    if bad_vectors:
        issue(f"{len(bad_vectors)} chunk(s) whose stored vector is not a unit {dim}-dimensional vector "
              f"(ids {sample(bad_vectors)})")
    for row_id, ordinals in per_doc.items():
        doc = docs[row_id]
        if sorted(ordinals) != list(range(len(ordinals))):
            issue(f"document {doc['doc_id']!r}: chunk ordinals are not 0..{len(ordinals) - 1}")
        if len(ordinals) != doc["n_chunks"] or not ordinals:
            issue(f"document {doc['doc_id']!r}: records {doc['n_chunks']} chunks, has {len(ordinals)}")
    return live_ids


def _check_vectors(store: IndexStore, manifest: dict[str, Any], conn: sqlite3.Connection, live_ids: set[int],
                   report: VerifyReport) -> None:
    issue = report.issues.append
    path = store.path / manifest["faiss_file"]
    try:
        vectors = VectorIndex.load(path, int(manifest["embedder"]["dim"]), manifest["vectors"]["kind"],
                                   manifest["vectors"].get("params", {}))
    except Exception as exc:  # any failure to load is the finding
        issue(f"FAISS file {manifest['faiss_file']} cannot be loaded: {exc}")
        return
    ids = vectors.ids()
    report.checked["faiss_ntotal"] = vectors.ntotal
    unique = set(ids.tolist())
    if len(unique) != len(ids):
        issue(f"FAISS holds {len(ids) - len(unique)} duplicate id(s)")
    missing, extra = live_ids - unique, unique - live_ids
    if missing:
        issue(f"{len(missing)} live chunk(s) have no vector in FAISS (ids {sample(missing)})")
    if extra:
        issue(f"FAISS holds {len(extra)} id(s) that are not live chunks (ids {sample(extra)})")
    if vectors.kind in ("flat", "hnsw") and len(ids):
        import faiss

        inner = faiss.downcast_index(vectors.index.index)
        positions = np.linspace(0, len(ids) - 1, num=min(len(ids), 64)).astype(int)
        stored = {r[0]: r[1] for r in conn.execute(
            f"SELECT id, vector FROM chunks WHERE id IN ({','.join('?' * len(positions))})",
            [int(ids[p]) for p in positions])}
        differ = [int(ids[p]) for p in positions if int(ids[p]) in stored and not np.allclose(
            inner.reconstruct(int(p)), np.frombuffer(stored[int(ids[p])], dtype=np.float32), atol=1e-5)]
        if differ:
            issue(f"{len(differ)} FAISS vector(s) differ from the stored ones (ids {sample(differ)})")
    orphans = [p.name for p in (store.path / VECTORS).iterdir()
               if (m := re.match(r"^(\d{10})\.faiss$", p.name)) and int(m.group(1)) > manifest["generation"]]
    if orphans:
        report.notes.append(f"{len(orphans)} FAISS file(s) newer than the manifest (an interrupted write)")
    report.checked["faiss_file"] = manifest["faiss_file"]

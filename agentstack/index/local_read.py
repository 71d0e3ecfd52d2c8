"""Reads of a FAISS + SQLite index (``store.LocalStore``): search, documents, one chunk, stats, and
the export a copy streams. Every read is filtered by the published generation, so it sees one
consistent version while a writer commits. This module never writes.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

from agentstack.index.backend import Export, ExportedDocument
from agentstack.index.store import live

if TYPE_CHECKING:
    from agentstack.index.search import Query, SearchHit
    from agentstack.index.store import LocalStore

DOC_COLUMNS = ("doc_id, source, title, format, metadata, n_chunks, length(text) AS chars, content_hash, "
               "ingested_at, added_gen")
EXPORT_BATCH = 512  # documents per read while exporting


def doc_row(row: Any) -> dict[str, Any]:
    out = dict(row)
    out["metadata"] = json.loads(out["metadata"])
    return out


def search(store: LocalStore, query: Query, embedder: Any | None) -> list[SearchHit]:
    from agentstack.index.search import Searcher

    return Searcher(store.snapshot(), store.db.conn(), embedder).search(query)


def documents(store: LocalStore, *, offset: int, limit: int, source_prefix: str | None
              ) -> tuple[list[dict[str, Any]], int]:
    g = store.snapshot().generation
    where, params = live("d", "?"), [g, g]
    if source_prefix:
        where += " AND substr(d.source, 1, ?) = ?"
        params += [len(source_prefix), source_prefix]
    conn = store.db.conn()
    total = conn.execute(f"SELECT count(*) FROM documents d WHERE {where}", params).fetchone()[0]
    rows = conn.execute(f"SELECT {DOC_COLUMNS} FROM documents d WHERE {where} ORDER BY source, doc_id "
                        "LIMIT ? OFFSET ?", [*params, max(0, limit), max(0, offset)]).fetchall()
    return [doc_row(r) for r in rows], total


def document(store: LocalStore, doc_id: str, *, with_text: bool = False) -> dict[str, Any] | None:
    g = store.snapshot().generation
    columns = DOC_COLUMNS + (", text" if with_text else "")
    row = store.db.conn().execute(f"SELECT {columns} FROM documents d WHERE doc_id = ? AND {live('d', '?')}",
                                  (doc_id, g, g)).fetchone()
    return doc_row(row) if row is not None else None


def chunk(store: LocalStore, chunk_id: int) -> dict[str, Any] | None:
    g = store.snapshot().generation
    row = store.db.conn().execute(
        "SELECT c.id AS chunk_id, c.ordinal, c.start, c.\"end\", c.heading, c.text, d.doc_id, d.source, d.title "
        f"FROM chunks c JOIN documents d ON d.row_id = c.doc_row WHERE c.id = ? AND {live('c', '?')}",
        (int(chunk_id), g, g)).fetchone()
    if row is None:
        return None
    out = dict(row)
    out["heading_path"] = json.loads(out.pop("heading"))
    return out


def stats(store: LocalStore) -> dict[str, Any]:
    snap = store.snapshot()
    g, m = snap.generation, snap.manifest
    conn = store.db.conn()
    agg = conn.execute(f"SELECT count(*), coalesce(sum(tokens), 0), coalesce(sum(length(text)), 0) FROM chunks c "
                       f"WHERE {live('c', '?')}", (g, g)).fetchone()
    formats = {r[0]: r[1] for r in conn.execute(
        f"SELECT format, count(*) FROM documents d WHERE {live('d', '?')} GROUP BY format", (g, g))}
    last = conn.execute("SELECT kind, at, added, updated, unchanged, deleted, failed, chunks FROM ingests "
                        "WHERE gen <= ? ORDER BY id DESC LIMIT 1", (g,)).fetchone()
    scrub = {r[0]: r[1] for r in conn.execute(
        "SELECT s.entity, sum(s.count) FROM scrub_counts s JOIN ingests i ON i.id = s.ingest_id "
        "WHERE i.gen <= ? GROUP BY s.entity ORDER BY s.entity", (g,))}
    disk = sum(p.stat().st_size for p in store.path.rglob("*") if p.is_file())
    return {"name": store.name, "backend": "faiss", "generation": g, "documents": m["counts"]["documents"],
            "chunks": agg[0], "tokens": agg[1], "chunk_chars": agg[2], "formats": formats, "embedder": m["embedder"],
            "vectors": {"kind": m["vectors"]["kind"], "requested": m["vectors"]["requested"]["kind"],
                        "ntotal": snap.vectors.ntotal, **m["vectors"].get("params", {})},
            "chunking": m["chunking"], "pii_policy": m["pii_policy"], "scrub_totals": scrub,
            "last_ingest": dict(last) if last else None, "disk_bytes": disk, "updated_at": m["updated_at"]}


def export(store: LocalStore) -> Export:
    """The published generation, read on one connection (a writer publishing meanwhile purges
    nothing this generation needs before two more versions)."""
    from agentstack.storage.sqlite import connect

    snap = store.snapshot()
    g, m = snap.generation, snap.manifest
    conn = connect(store.path / "index.db", readonly=True)
    conn.execute("BEGIN")  # one snapshot for the whole export
    config = json.loads(conn.execute("SELECT config FROM generations WHERE gen = ?", (g,)).fetchone()[0])
    ingests = []
    for r in conn.execute("SELECT * FROM ingests WHERE gen <= ? ORDER BY id", (g,)).fetchall():
        entry = dict(r)
        entry["failures"] = json.loads(entry.pop("failures"))
        entry["scrub"] = [dict(s) for s in conn.execute(
            "SELECT doc_id, entity, count FROM scrub_counts WHERE ingest_id = ?", (entry.pop("id"),))]
        ingests.append(entry)
    dim = int(m["embedder"]["dim"])

    def docs() -> Iterator[ExportedDocument]:
        try:
            last = -1
            while True:
                rows = conn.execute(f"SELECT * FROM documents d WHERE {live('d', '?')} AND row_id > ? ORDER BY row_id "
                                    "LIMIT ?", (g, g, last, EXPORT_BATCH)).fetchall()
                if not rows:
                    return
                last = rows[-1]["row_id"]
                by_doc: dict[int, list[Any]] = {r["row_id"]: [] for r in rows}
                marks = ",".join("?" * len(rows))
                for c in conn.execute(f'SELECT id, doc_row, ordinal, start, "end", heading, tokens, text, vector '
                                      f"FROM chunks c WHERE doc_row IN ({marks}) AND {live('c', '?')} ORDER BY id",
                                      [*by_doc, g, g]):
                    by_doc[c["doc_row"]].append(c)
                for r in rows:
                    chunks = sorted(by_doc[r["row_id"]], key=lambda c: c["ordinal"])
                    row = {k: r[k] for k in ("doc_id", "source", "title", "format", "fingerprint", "content_hash",
                                             "text", "n_chunks", "ingested_at", "added_gen")}
                    row["metadata"] = json.loads(r["metadata"])
                    vectors = np.frombuffer(b"".join(c["vector"] for c in chunks), np.float32).reshape(len(chunks), dim)
                    yield ExportedDocument(row, [{"id": c["id"], "ordinal": c["ordinal"], "start": c["start"],
                                                  "end": c["end"], "heading_path": json.loads(c["heading"]),
                                                  "tokens": c["tokens"], "text": c["text"]} for c in chunks],
                                           vectors)
        finally:
            conn.execute("ROLLBACK")
            conn.close()

    return Export(store.name, g, config, store.spec(), dict(m["counts"]), ingests, docs())

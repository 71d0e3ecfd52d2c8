"""Read access to one index: search, documents, stats, verify, a LangChain retriever.

An :class:`Index` follows the index's manifest: every call uses the latest published version, so
a server holding one picks up new versions written by other processes without a restart. It is
safe to share between threads. It never writes; :class:`agentstack.index.manager.IndexManager`
does, through the store's writer.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from agentstack.embeddings.base import Embedder
from agentstack.errors import NotFoundError
from agentstack.index.search import Query, Searcher, SearchHit, validate
from agentstack.index.spec import LimitsSpec
from agentstack.index.store import IndexStore, live

_DOC_COLUMNS = ("doc_id, source, title, format, metadata, n_chunks, length(text) AS chars, content_hash, "
                "ingested_at, added_gen")


def _doc(row: Any) -> dict[str, Any]:
    out = dict(row)
    out["metadata"] = json.loads(out["metadata"])
    return out


class Index:
    """One index, read side. ``embedder`` is the embedder (or a zero-argument factory for it) used
    for dense queries; BM25 queries never load it."""

    def __init__(self, store: IndexStore, embedder: Embedder | Callable[[], Embedder] | None = None):
        self.store = store
        self._embedder = embedder

    @property
    def name(self) -> str:
        return self.store.name

    def manifest(self) -> dict[str, Any]:
        return self.store.snapshot().manifest

    def limits(self) -> LimitsSpec:
        return LimitsSpec.model_validate(self.store.spec().get("limits", {}))

    def embedder(self) -> Embedder:
        if self._embedder is None:
            raise NotFoundError(f"index {self.name!r} has no embedder attached", fix="open it through IndexManager")
        if not hasattr(type(self._embedder), "encode"):  # a factory (isinstance would load the model)
            self._embedder = self._embedder()
        return self._embedder

    # -- search ---------------------------------------------------------------------------------
    def search(self, query: str, *, k: int = 5, mode: str = "hybrid", filters: dict[str, Any] | None = None,
               min_score: float | None = None) -> list[SearchHit]:
        """Top-``k`` chunks for ``query``. ``mode``: dense | bm25 | hybrid. Raises
        :class:`~agentstack.errors.InvalidRequestError` (empty or too long query, bad k, mode or
        filters) and :class:`~agentstack.index.store.EmbedderMismatchError`."""
        limits = self.limits()
        q = validate(Query(query, k, mode, filters, min_score), max_chars=limits.max_query_chars, max_k=limits.max_k)
        snap = self.store.snapshot()
        embedder = self.embedder() if mode != "bm25" else None
        return Searcher(snap, self.store.db.conn(), embedder).search(q)

    def as_retriever(self, **kwargs: Any) -> Any:
        """A LangChain ``BaseRetriever`` over this index (see :class:`IndexRetriever`)."""
        from agentstack.index.retriever import IndexRetriever

        return IndexRetriever(index=self, **kwargs)

    # -- documents ------------------------------------------------------------------------------
    def documents(self, *, offset: int = 0, limit: int = 100, source_prefix: str | None = None
                  ) -> tuple[list[dict[str, Any]], int]:
        """(documents of the published version, total count), ordered by source."""
        g = self.store.snapshot().generation
        where, params = live("d", "?"), [g, g]
        if source_prefix:
            where += " AND substr(d.source, 1, ?) = ?"
            params += [len(source_prefix), source_prefix]
        conn = self.store.db.conn()
        total = conn.execute(f"SELECT count(*) FROM documents d WHERE {where}", params).fetchone()[0]
        rows = conn.execute(f"SELECT {_DOC_COLUMNS} FROM documents d WHERE {where} ORDER BY source, doc_id "
                            "LIMIT ? OFFSET ?", [*params, max(0, limit), max(0, offset)]).fetchall()
        return [_doc(r) for r in rows], total

    def document(self, doc_id: str, *, with_text: bool = False) -> dict[str, Any]:
        g = self.store.snapshot().generation
        columns = _DOC_COLUMNS + (", text" if with_text else "")
        row = self.store.db.conn().execute(f"SELECT {columns} FROM documents d WHERE doc_id = ? AND "
                                           f"{live('d', '?')}", (doc_id, g, g)).fetchone()
        if row is None:
            raise NotFoundError(f"index {self.name!r} has no document {doc_id!r}", param="doc_id",
                                fix=f"list documents with `agentstack index docs {self.name}`")
        return _doc(row)

    def chunk(self, chunk_id: int) -> dict[str, Any]:
        """One chunk of the published version, with its document's id, source and title."""
        g = self.store.snapshot().generation
        row = self.store.db.conn().execute(
            "SELECT c.id AS chunk_id, c.ordinal, c.start, c.\"end\", c.heading, c.text, d.doc_id, d.source, d.title "
            f"FROM chunks c JOIN documents d ON d.row_id = c.doc_row WHERE c.id = ? AND {live('c', '?')}",
            (int(chunk_id), g, g)).fetchone()
        if row is None:
            raise NotFoundError(f"index {self.name!r} has no chunk {chunk_id}", param="chunk_id",
                                fix="use a chunk id returned by a search")
        out = dict(row)
        out["heading_path"] = json.loads(out.pop("heading"))
        return out

    # -- stats ----------------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        snap = self.store.snapshot()
        g, m = snap.generation, snap.manifest
        conn = self.store.db.conn()
        agg = conn.execute(f"SELECT count(*), coalesce(sum(tokens), 0), coalesce(sum(length(text)), 0) FROM chunks c "
                           f"WHERE {live('c', '?')}", (g, g)).fetchone()
        formats = {r[0]: r[1] for r in conn.execute(
            f"SELECT format, count(*) FROM documents d WHERE {live('d', '?')} GROUP BY format", (g, g))}
        last = conn.execute("SELECT kind, at, added, updated, unchanged, deleted, failed, chunks FROM ingests "
                            "WHERE gen <= ? ORDER BY id DESC LIMIT 1", (g,)).fetchone()
        scrub = {r[0]: r[1] for r in conn.execute(
            "SELECT s.entity, sum(s.count) FROM scrub_counts s JOIN ingests i ON i.id = s.ingest_id "
            "WHERE i.gen <= ? GROUP BY s.entity ORDER BY s.entity", (g,))}
        disk = sum(p.stat().st_size for p in self.store.path.rglob("*") if p.is_file())
        return {"name": self.name, "generation": g, "documents": m["counts"]["documents"], "chunks": agg[0],
                "tokens": agg[1], "chunk_chars": agg[2], "formats": formats, "embedder": m["embedder"],
                "vectors": {"kind": m["vectors"]["kind"], "requested": m["vectors"]["requested"]["kind"],
                            "ntotal": snap.vectors.ntotal, **m["vectors"].get("params", {})},
                "chunking": m["chunking"], "pii_policy": m["pii_policy"], "scrub_totals": scrub,
                "last_ingest": dict(last) if last else None, "disk_bytes": disk, "updated_at": m["updated_at"]}

    def verify(self) -> Any:
        from agentstack.index.verify import verify

        return verify(self.store)

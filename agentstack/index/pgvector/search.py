"""Dense, full-text and hybrid search over one pgvector index, inside the reader's transaction.

* ``dense``: ``embedding <#> query`` (negative inner product; vectors are unit-norm, so the score
  is the cosine). With an HNSW or IVF index the walk uses pgvector 0.8's iterative scans
  (``relaxed_order``, re-sorted here), so rows a filter rejects are replaced by further neighbours
  instead of being lost, up to ``index.max_scan_tuples``. A filter matching at most
  :data:`~agentstack.index.vectors.EXACT_FILTER_LIMIT` chunks is searched exactly (the ANN index
  cannot be used for ``(embedding <#> q) + 0``). Flat indexes are always exact.
* ``bm25``: PostgreSQL full text (``english`` configuration: stemming and stop words) over chunk
  text (weight A) and headings (weight B), the query's words OR-ed as in the FAISS backend, ranked
  by ``ts_rank`` without length normalisation (on ClapNQ dev: recall@1 0.837 against 0.783 with
  normalisation 1, 0.70 with ``ts_rank_cd``). Named ``bm25`` for one API across backends; it is not BM25.
* ``hybrid``: the shared reciprocal rank fusion (``agentstack.index.search.run``).

Filters are the FAISS backend's: ``doc_id``/``source``/``format``/``title`` or a metadata key, an
exact JSON value or a list of them; null matches a missing key.
"""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa

from agentstack.errors import InvalidRequestError
from agentstack.index.search import Query, SearchHit, query_words, run
from agentstack.index.store import check_embedder
from agentstack.index.vectors import EXACT_FILTER_LIMIT

_COLUMNS = {"doc_id": "d.doc_id", "source": "d.source", "format": "d.format", "title": "d.title"}
_WEIGHTS = "'{0.1, 0.2, 0.5, 1.0}'"  # D, C, B (headings), A (text): FTS5's 0.5 / 1.0 column weights


def filter_sql(filters: dict[str, Any] | None) -> tuple[str, dict[str, Any]]:
    """`` AND ...`` conditions on documents ``d`` and their parameters (filters already validated)."""
    if not filters:
        return "", {}
    parts, params = [], {}
    for i, (key, value) in enumerate(filters.items()):
        alts = []
        for j, v in enumerate(value if isinstance(value, list) else [value]):
            p = f"f{i}_{j}"
            if key in _COLUMNS:
                alts.append(f"{_COLUMNS[key]} IS NULL" if v is None else f"{_COLUMNS[key]} = :{p}")
                if v is not None:
                    params[p] = v
            else:
                params[f"k{i}"] = key
                if v is None:
                    alts.append(f"(d.metadata -> :k{i} IS NULL OR d.metadata -> :k{i} = 'null'::jsonb)")
                else:
                    alts.append(f"d.metadata -> :k{i} = CAST(:{p} AS jsonb)")
                    params[p] = json.dumps(v)
        parts.append("(" + " OR ".join(alts) + ")")
    return " AND " + " AND ".join(parts), params


class PgSearcher:
    """Queries of one reader transaction (``conn``) on the tables ``t`` of a published version."""

    def __init__(self, conn: sa.Connection, t: Any, manifest: dict[str, Any], embedder: Any | None, *,
                 max_scan_tuples: int):
        self.conn, self.t, self.manifest, self.embedder = conn, t, manifest, embedder
        self.kind = manifest["vectors"]["kind"]
        self.params = manifest["vectors"].get("params", {})
        self.max_scan_tuples = max_scan_tuples

    def search(self, query: Query) -> list[SearchHit]:
        return run(query, lambda n: self.dense(query.text, n, query.filters),
                   lambda n: self.bm25(query.text, n, query.filters), self.rows)

    def _allowed(self, where: str, params: dict[str, Any]) -> int:
        """How many chunks pass the filter, counted up to EXACT_FILTER_LIMIT + 1."""
        return int(self.conn.execute(sa.text(
            f"SELECT count(*) FROM (SELECT 1 FROM {self.t.chunks} c JOIN {self.t.docs} d ON d.row_id = c.doc_row "
            f"WHERE true {where} LIMIT {EXACT_FILTER_LIMIT + 1}) s"), params).scalar_one())

    def dense(self, text: str, n: int, filters: dict[str, Any] | None) -> list[tuple[int, float]]:
        if self.embedder is None:
            raise InvalidRequestError("dense search needs an embedder", param="mode")
        check_embedder(self.manifest, self.embedder.id, self.embedder.dim)
        if not self.manifest["counts"]["chunks"]:
            return []
        where, params = filter_sql(filters)
        exact = self.kind == "flat"
        if where and not exact:
            allowed = self._allowed(where, params)
            if allowed == 0:
                return []
            exact = allowed <= EXACT_FILTER_LIMIT
        params["q"] = self.embedder.encode([text])[0]
        distance = "(c.embedding <#> :q) + 0" if exact else "c.embedding <#> :q"  # + 0: the ANN index cannot serve it
        if not exact:
            self._scan_settings(n)
        join = f"JOIN {self.t.docs} d ON d.row_id = c.doc_row" if where else ""
        rows = self.conn.execute(sa.text(
            f"SELECT c.id, c.embedding <#> :q AS dist FROM {self.t.chunks} c {join} WHERE true {where} "
            f"ORDER BY {distance} LIMIT {int(n)}"), params).all()
        ranked = sorted(((int(r[0]), -float(r[1])) for r in rows), key=lambda r: (-r[1], r[0]))
        return ranked  # relaxed order: sorted here

    def _scan_settings(self, n: int) -> None:
        if self.kind == "hnsw":
            ef = min(1000, max(int(self.params.get("ef_search", 64)), n))
            self.conn.execute(sa.text(f"SET LOCAL hnsw.ef_search = {ef}"))
            self.conn.execute(sa.text("SET LOCAL hnsw.iterative_scan = relaxed_order"))
            self.conn.execute(sa.text(f"SET LOCAL hnsw.max_scan_tuples = {int(self.max_scan_tuples)}"))
        elif self.kind == "ivf":
            self.conn.execute(sa.text(f"SET LOCAL ivfflat.probes = {int(self.params.get('probes', 16))}"))
            self.conn.execute(sa.text("SET LOCAL ivfflat.iterative_scan = relaxed_order"))

    def bm25(self, text: str, n: int, filters: dict[str, Any] | None) -> list[tuple[int, float]]:
        words = query_words(text)
        if not words:
            return []
        where, params = filter_sql(filters)
        params["expr"] = " | ".join(f"'{w}'" for w in words)  # \w+ words: no quotes inside
        join = f"JOIN {self.t.docs} d ON d.row_id = c.doc_row" if where else ""
        rows = self.conn.execute(sa.text(
            f"SELECT c.id, ts_rank({_WEIGHTS}, c.tsv, q.q) AS s FROM {self.t.chunks} c {join}, "
            f"to_tsquery('english', :expr) AS q(q) WHERE c.tsv @@ q.q {where} ORDER BY s DESC, c.id "
            f"LIMIT {int(n)}"), params).all()
        return [(int(r[0]), float(r[1])) for r in rows]

    def rows(self, ids: list[int]) -> dict[int, dict[str, Any]]:
        if not ids:
            return {}
        rows = self.conn.execute(sa.text(
            f'SELECT c.id, c.ordinal, c.start, c."end", c.heading, c.text, d.doc_id, d.source, d.title, d.metadata '
            f"FROM {self.t.chunks} c JOIN {self.t.docs} d ON d.row_id = c.doc_row WHERE c.id = ANY(:ids)"),
            {"ids": [int(i) for i in ids]}).mappings().all()
        return {int(r["id"]): {**dict(r), "heading": json.loads(r["heading"])} for r in rows}

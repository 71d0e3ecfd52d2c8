"""Retrieval over one published index version: dense, BM25 and hybrid.

* ``dense``: the query embedding against FAISS; the score is cosine similarity.
* ``bm25``: SQLite FTS5 (``porter unicode61`` tokens over chunk text and headings); the score is
  FTS5's BM25, sign flipped so higher is better. The query's words are OR-ed, without a short list
  of English stop words (kept if nothing else is left).
* ``hybrid``: reciprocal rank fusion of both candidate lists, ``sum 1 / (60 + rank)`` (:func:`run`,
  shared with the pgvector backend).

Filters restrict results by document: ``doc_id``, ``source``, ``format``, ``title`` or any metadata
key, each an exact value or a list of allowed values. ``min_score`` drops hits scoring below it
(in the mode's own score). Every row read is filtered by the reader's generation, so results come
from one consistent version even while a writer commits. This module knows nothing about how
indexes are written.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from agentstack.errors import InvalidRequestError
from agentstack.index.store import Snapshot, check_embedder, live
from agentstack.index.vectors import EXACT_FILTER_LIMIT

MODES = ("dense", "bm25", "hybrid")
RRF_K = 60
_COLUMNS = {"doc_id": "d.doc_id", "source": "d.source", "format": "d.format", "title": "d.title"}
_STOP = frozenset("a an and are as at be but by for from has have how i in is it its of on or that the this to "
                  "was what when where which who why will with do does did can".split())
_WORD = re.compile(r"\w+", re.UNICODE)
_FILTER_FIX = 'e.g. {"lang": "en", "year": [2023, 2024]}; keys are metadata fields or doc_id/source/format/title'


@dataclass
class SearchHit:
    chunk_id: int
    doc_id: str
    source: str
    title: str
    text: str
    score: float
    ordinal: int
    start: int
    end: int
    heading_path: list[str]
    metadata: dict[str, Any]
    scores: dict[str, float] = field(default_factory=dict)  # per mode, for hybrid

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Query:
    text: str
    k: int = 5
    mode: str = "hybrid"
    filters: dict[str, Any] | None = None
    min_score: float | None = None


def validate(query: Query, *, max_chars: int, max_k: int) -> Query:
    if not isinstance(query.text, str) or not query.text.strip():
        raise InvalidRequestError("the query is empty", param="query", fix="send a non-empty query")
    if len(query.text) > max_chars:
        raise InvalidRequestError(f"the query is {len(query.text)} characters; the limit is {max_chars}",
                                  param="query", fix="shorten the query")
    if not isinstance(query.k, int) or not 1 <= query.k <= max_k:
        raise InvalidRequestError(f"k must be between 1 and {max_k}, got {query.k!r}", param="k",
                                  fix=f"ask for at most {max_k} results")
    if query.mode not in MODES:
        raise InvalidRequestError(f"unknown search mode {query.mode!r}", param="mode",
                                  fix=f"use one of {', '.join(MODES)}")
    filter_sql(query.filters)  # validates
    return query


def filter_sql(filters: dict[str, Any] | None) -> tuple[str, list[Any]]:
    """SQL conditions (on documents ``d``) and parameters for a filter mapping."""
    if not filters:
        return "", []
    if not isinstance(filters, dict):
        raise InvalidRequestError("filters must be an object of field: value", param="filters", fix=_FILTER_FIX)
    parts, params = [], []
    for key, value in filters.items():
        if not isinstance(key, str) or not key or len(key) > 128 or '"' in key:
            raise InvalidRequestError(f"invalid filter key {key!r}", param="filters", fix=_FILTER_FIX)
        values = value if isinstance(value, list) else [value]
        if not values or len(values) > 1000 or \
                not all(v is None or isinstance(v, (str, int, float, bool)) for v in values):
            raise InvalidRequestError(f"filter {key!r}: give a value or a list of up to 1000 values (strings, "
                                      "numbers, booleans or null)", param="filters", fix=_FILTER_FIX)
        column, column_params = (_COLUMNS[key], []) if key in _COLUMNS else \
            ("json_extract(d.metadata, ?)", [f'$."{key}"'])
        alts = []
        for v in values:
            alts.append(f"{column} IS NULL" if v is None else f"{column} = ?")
            params += column_params + ([] if v is None else [int(v) if isinstance(v, bool) else v])
        parts.append("(" + " OR ".join(alts) + ")")
    return " AND " + " AND ".join(parts), params


def query_words(text: str) -> list[str]:
    """The words a full-text query ORs: lower-cased, de-duplicated, without common English stop
    words (kept if nothing else is left), at most 64."""
    words = list(dict.fromkeys(w.lower() for w in _WORD.findall(text)))
    return ([w for w in words if w not in _STOP] or words)[:64]


def fts_query(text: str) -> str | None:
    return " OR ".join('"' + w.replace('"', '""') + '"' for w in query_words(text)) or None


class Searcher:
    """Runs queries against a snapshot; ``conn`` is a read connection to the index database."""

    def __init__(self, snap: Snapshot, conn: Any, embedder: Any | None):
        self.snap = snap
        self.conn = conn
        self.embedder = embedder
        self.g = snap.generation

    def allowed_ids(self, filters: dict[str, Any] | None) -> np.ndarray | None:
        where, params = filter_sql(filters)
        if not where:
            return None
        rows = self.conn.execute(f"SELECT c.id FROM chunks c JOIN documents d ON d.row_id = c.doc_row "
                                 f"WHERE {live('c', '?')} {where}", [self.g, self.g, *params]).fetchall()
        return np.array([r[0] for r in rows], dtype=np.int64)

    def dense(self, text: str, n: int, allowed: np.ndarray | None) -> list[tuple[int, float]]:
        if self.embedder is None:
            raise InvalidRequestError("dense search needs an embedder", param="mode")
        check_embedder(self.snap.manifest, self.embedder.id, self.embedder.dim)
        vectors = self.snap.vectors
        if vectors.ntotal == 0 or (allowed is not None and len(allowed) == 0):
            return []
        query = self.embedder.encode([text])
        if allowed is not None and vectors.kind != "flat" and len(allowed) <= EXACT_FILTER_LIMIT:
            return self._exact(query[0], n, allowed)  # ANN with a narrow filter misses; exact is cheap here
        want, widen = min(n, vectors.ntotal if allowed is None else len(allowed)), 1
        while True:  # a filter rejecting most of the walk's finds: widen the walk until n pass
            scores, ids = vectors.search(query, n, allowed, widen=widen)
            found = sorted(((int(i), float(s)) for i, s in zip(ids[0], scores[0]) if i >= 0),
                           key=lambda r: (-r[1], r[0]))  # ties in id order, as on every backend
            if len(found) >= want or allowed is None or vectors.kind == "flat":
                return found
            if widen >= 16:  # the allowed rows sit where the walk does not go (another cluster): exact
                return self._exact(query[0], n, allowed)
            widen *= 4

    def _exact(self, query: np.ndarray, n: int, allowed: np.ndarray) -> list[tuple[int, float]]:
        marks = ",".join("?" * len(allowed))
        rows = self.conn.execute(f"SELECT id, vector FROM chunks WHERE id IN ({marks})",
                                 [int(i) for i in allowed]).fetchall()
        if not rows:
            return []
        ids = np.array([r[0] for r in rows], dtype=np.int64)
        mat = np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float32).reshape(len(rows), -1)
        scores = mat @ query
        top = np.argsort(-scores, kind="stable")[:n]
        return [(int(ids[i]), float(scores[i])) for i in top]

    def bm25(self, text: str, n: int, filters: dict[str, Any] | None) -> list[tuple[int, float]]:
        expr = fts_query(text)
        if expr is None:
            return []
        where, params = filter_sql(filters)
        if not where:
            # Rank in FTS5 alone, then keep this generation's rows: about half the time of ranking
            # the join. Rows of other generations are few (unpurged or not yet published); if they
            # crowd the top, fall through to the exact query below.
            inner = 2 * n + 32
            rows = self.conn.execute(
                f"SELECT c.id, r.s FROM (SELECT rowid, bm25(chunks_fts, 1.0, 0.5) AS s FROM chunks_fts WHERE "
                f"chunks_fts MATCH ? ORDER BY s LIMIT ?) r JOIN chunks c ON c.id = r.rowid WHERE {live('c', '?')} "
                "ORDER BY r.s LIMIT ?", [expr, inner, self.g, self.g, n]).fetchall()
            if len(rows) == n or self._fts_matches(expr, inner) < inner:
                return [(int(r[0]), -float(r[1])) for r in rows]
        join = "JOIN documents d ON d.row_id = c.doc_row" if where else ""
        rows = self.conn.execute(
            f"SELECT c.id, bm25(chunks_fts, 1.0, 0.5) AS s FROM chunks_fts JOIN chunks c ON c.id = chunks_fts.rowid "
            f"{join} WHERE chunks_fts MATCH ? AND {live('c', '?')} {where} ORDER BY s LIMIT ?",
            [expr, self.g, self.g, *params, n]).fetchall()
        return [(int(r[0]), -float(r[1])) for r in rows]

    def _fts_matches(self, expr: str, cap: int) -> int:
        return self.conn.execute("SELECT count(*) FROM (SELECT 1 FROM chunks_fts WHERE chunks_fts MATCH ? LIMIT ?)",
                                 (expr, cap)).fetchone()[0]

    def search(self, query: Query) -> list[SearchHit]:
        allowed = self.allowed_ids(query.filters) if query.mode != "bm25" else None
        return run(query, lambda n: self.dense(query.text, n, allowed), lambda n: self.bm25(query.text, n, query.filters),
                   self.rows)

    def rows(self, ids: list[int]) -> dict[int, dict[str, Any]]:
        if not ids:
            return {}
        marks = ",".join("?" * len(ids))
        rows = self.conn.execute(
            f'SELECT c.id, c.ordinal, c.start, c."end", c.heading, c.text, d.doc_id, d.source, d.title, d.metadata '
            f"FROM chunks c JOIN documents d ON d.row_id = c.doc_row WHERE c.id IN ({marks}) AND {live('c', '?')}",
            [*ids, self.g, self.g]).fetchall()
        return {r["id"]: {**dict(r), "heading": json.loads(r["heading"]), "metadata": json.loads(r["metadata"])}
                for r in rows}


def run(query: Query, dense: Callable[[int], list[tuple[int, float]]], bm25: Callable[[int], list[tuple[int, float]]],
        rows: Callable[[list[int]], dict[int, dict[str, Any]]]) -> list[SearchHit]:
    """One query over any backend: ``dense(n)`` and ``bm25(n)`` give each mode's top ``n`` as
    (chunk id, score); hybrid fuses the top max(50, 4k) of both (RRF); ``rows(ids)`` gives the
    hits' chunk and document fields (heading as a list, metadata as a dict)."""
    k = query.k
    per_mode: dict[str, dict[int, float]] = {}
    if query.mode == "dense":
        ranked = dense(k)
        per_mode["dense"] = dict(ranked)
    elif query.mode == "bm25":
        ranked = bm25(k)
        per_mode["bm25"] = dict(ranked)
    else:
        depth = max(50, 4 * k)
        dense_ranked, sparse = dense(depth), bm25(depth)
        per_mode = {"dense": dict(dense_ranked), "bm25": dict(sparse)}
        fused: dict[int, float] = {}
        for ranking in (dense_ranked, sparse):
            for rank, (cid, _) in enumerate(ranking, start=1):
                fused[cid] = fused.get(cid, 0.0) + 1.0 / (RRF_K + rank)
        ranked = sorted(fused.items(), key=lambda kv: (-kv[1], kv[0]))
    if query.min_score is not None:
        ranked = [(cid, s) for cid, s in ranked if s >= query.min_score]
    ranked = ranked[:k]
    found = rows([cid for cid, _ in ranked])
    hits = []
    for cid, score in ranked:
        row = found.get(cid)
        if row is None:  # retired after this snapshot was taken and already purged
            continue
        hits.append(SearchHit(
            chunk_id=cid, doc_id=row["doc_id"], source=row["source"], title=row["title"], text=row["text"],
            score=round(score, 6), ordinal=row["ordinal"], start=row["start"], end=row["end"],
            heading_path=list(row["heading"]), metadata=dict(row["metadata"]),
            scores={m: round(v[cid], 6) for m, v in per_mode.items() if cid in v}))
    return hits

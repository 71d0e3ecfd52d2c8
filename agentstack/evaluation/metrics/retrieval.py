"""Retrieval metrics for one ranked list, and their means over queries.

``ranked`` is the list of retrieved ids, best first. ``relevant`` is either a set of relevant ids
(binary relevance) or a mapping id → graded relevance (0 = not relevant). Definitions:

* recall@k = |relevant ∩ top k| / |relevant| (0 when nothing is relevant);
* precision@k = |relevant ∩ top k| / k (k, not the number retrieved: a short list is penalised);
* reciprocal rank = 1 / rank of the first relevant id (0 if none); MRR is its mean;
* nDCG@k = DCG@k / IDCG@k with linear gain, DCG = Σ rel_i / log2(i + 1) (Järvelin & Kekäläinen),
  where the ideal ranking is built from *all* judged relevant ids, retrieved or not.

Duplicated ids in ``ranked`` count once, at their first position.
This module knows nothing about indexes or embeddings.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable, Mapping, Sequence

Relevance = Mapping[Hashable, float] | Iterable[Hashable]


def _grades(relevant: Relevance) -> dict[Hashable, float]:
    if isinstance(relevant, Mapping):
        return {k: float(v) for k, v in relevant.items() if float(v) > 0}
    return {k: 1.0 for k in relevant}


def _dedupe(ranked: Sequence[Hashable]) -> list[Hashable]:
    seen: set = set()
    out = []
    for x in ranked:
        if x not in seen:
            seen.add(x)
            out.append(x)
    return out


def _check_k(k: int) -> None:
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")


def recall_at_k(ranked: Sequence[Hashable], relevant: Relevance, k: int) -> float:
    _check_k(k)
    rel = _grades(relevant)
    if not rel:
        return 0.0
    return sum(1 for x in _dedupe(ranked)[:k] if x in rel) / len(rel)


def precision_at_k(ranked: Sequence[Hashable], relevant: Relevance, k: int) -> float:
    _check_k(k)
    rel = _grades(relevant)
    return sum(1 for x in _dedupe(ranked)[:k] if x in rel) / k


def reciprocal_rank(ranked: Sequence[Hashable], relevant: Relevance) -> float:
    rel = _grades(relevant)
    for i, x in enumerate(_dedupe(ranked), start=1):
        if x in rel:
            return 1.0 / i
    return 0.0


def dcg(gains: Sequence[float]) -> float:
    return sum(g / math.log2(i + 1) for i, g in enumerate(gains, start=1))


def ndcg_at_k(ranked: Sequence[Hashable], relevant: Relevance, k: int) -> float:
    _check_k(k)
    rel = _grades(relevant)
    ideal = dcg(sorted(rel.values(), reverse=True)[:k])
    if ideal == 0:
        return 0.0
    return dcg([rel.get(x, 0.0) for x in _dedupe(ranked)[:k]]) / ideal


def retrieval_scores(ranked: Sequence[Hashable], relevant: Relevance, ks: Sequence[int] = (1, 5, 10)
                     ) -> dict[str, float]:
    """All of the above for one query, keyed ``recall@5``, ``precision@5``, ``ndcg@5``, ``mrr``."""
    out = {"mrr": reciprocal_rank(ranked, relevant)}
    for k in ks:
        out[f"recall@{k}"] = recall_at_k(ranked, relevant, k)
        out[f"precision@{k}"] = precision_at_k(ranked, relevant, k)
        out[f"ndcg@{k}"] = ndcg_at_k(ranked, relevant, k)
    return out


def mean_retrieval_scores(queries: Iterable[tuple[Sequence[Hashable], Relevance]],
                          ks: Sequence[int] = (1, 5, 10)) -> dict[str, float]:
    """Means over queries of :func:`retrieval_scores` (MRR is the mean reciprocal rank)."""
    rows = [retrieval_scores(r, rel, ks) for r, rel in queries]
    if not rows:
        return {}
    return {key: sum(row[key] for row in rows) / len(rows) for key in rows[0]}

"""Semantic similarity: cosine of sentence embeddings.

Takes any embedder with ``encode(texts) -> numpy array of shape (len(texts), dim)`` (the
``agentstack.embeddings`` protocol; the real one runs on the compute worker itself). Vectors are
normalised here, so an embedder that already normalises gives the same result.
This module knows nothing about which model made the vectors.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol


class TextEncoder(Protocol):
    def encode(self, texts: list[str]) -> Any: ...


def cosine_matrix_rows(a: Any, b: Any) -> list[float]:
    """Row-wise cosine of two (n, d) arrays; a zero vector has similarity 0 with anything."""
    import numpy as np

    a = np.asarray(a, dtype=float)
    b = np.asarray(b, dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"embedding shapes differ: {a.shape} vs {b.shape}")
    na = np.linalg.norm(a, axis=1)
    nb = np.linalg.norm(b, axis=1)
    dots = (a * b).sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        sims = np.where((na > 0) & (nb > 0), dots / (na * nb), 0.0)
    return [float(x) for x in sims]


def embedding_cosine(embedder: TextEncoder, predictions: Sequence[str], references: Sequence[str]) -> list[float]:
    """Cosine similarity of each prediction with its reference, in [-1, 1]; one encode call."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
    if not predictions:
        return []
    vectors = embedder.encode(list(predictions) + list(references))
    n = len(predictions)
    import numpy as np

    vectors = np.asarray(vectors)
    return cosine_matrix_rows(vectors[:n], vectors[n:])

"""The embedder contract.

An :class:`Embedder` turns texts into L2-normalised ``float32`` vectors, so that inner product is
cosine similarity, and names itself with a stable ``id`` that every index records next to the
dimension: a query or an addition from another embedder is refused (see ``agentstack/index``).

This module knows nothing about torch or any model format; implementations live beside it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class Embedder(Protocol):
    """Contract:

    * ``id``: stable identifier of the model that produced the vectors, e.g.
      ``sentence-transformers/all-MiniLM-L6-v2``. Two embedders with the same id produce
      interchangeable vectors.
    * ``dim``: vector dimension (may load the model on first access).
    * ``max_tokens``: longest input, in the embedder's own tokens; longer texts are truncated, so
      chunkers keep chunks below it.
    * ``encode(texts)``: a ``(len(texts), dim)`` ``float32`` array, each row of unit L2 norm; an
      empty list gives a ``(0, dim)`` array. Order is preserved.
    * ``count_tokens(text)``: the embedder's token count of ``text`` without special tokens (for
      token-aware chunking); must not need the model weights.
    * ``warm_up()``: load weights now (idempotent); constructors stay cheap.
    """

    @property
    def id(self) -> str: ...

    @property
    def dim(self) -> int: ...

    @property
    def max_tokens(self) -> int: ...

    def encode(self, texts: Sequence[str]) -> np.ndarray: ...

    def count_tokens(self, text: str) -> int: ...

    def warm_up(self) -> None: ...

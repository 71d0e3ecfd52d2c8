"""Read access to one index: search, documents, stats, verify, a LangChain retriever.

An :class:`Index` validates a query and hands it to its store (FAISS + SQLite, or pgvector: see
``backend.py``). Every call uses the latest published version (FAISS: the manifest; pgvector: the
catalog row, read in the query's own transaction), so a server holding one picks up new versions
written by other processes or replicas without a restart. It is safe to share between threads. It never writes; :class:`agentstack.index.manager.IndexManager`
does, through the store's writer.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from agentstack.embeddings.base import Embedder
from agentstack.errors import NotFoundError
from agentstack.index.backend import IndexStore
from agentstack.index.search import Query, SearchHit, validate
from agentstack.index.spec import LimitsSpec


class Index:
    """One index, read side, over any backend's store. ``embedder`` is the embedder (or a
    zero-argument factory for it) used for dense queries; BM25 queries never load it."""

    def __init__(self, store: IndexStore, embedder: Embedder | Callable[[], Embedder] | None = None):
        self.store = store
        self._embedder = embedder

    @property
    def name(self) -> str:
        return self.store.name

    @property
    def backend(self) -> str:
        return self.store.backend

    def manifest(self) -> dict[str, Any]:
        return self.store.manifest()

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
        embedder = self.embedder() if mode != "bm25" else None
        return self.store.search(q, embedder)

    def as_retriever(self, **kwargs: Any) -> Any:
        """A LangChain ``BaseRetriever`` over this index (see :class:`IndexRetriever`)."""
        from agentstack.index.retriever import IndexRetriever

        return IndexRetriever(index=self, **kwargs)

    # -- documents ------------------------------------------------------------------------------
    def documents(self, *, offset: int = 0, limit: int = 100, source_prefix: str | None = None
                  ) -> tuple[list[dict[str, Any]], int]:
        """(documents of the published version, total count), ordered by source."""
        return self.store.documents(offset=offset, limit=limit, source_prefix=source_prefix)

    def document(self, doc_id: str, *, with_text: bool = False) -> dict[str, Any]:
        row = self.store.document(doc_id, with_text=with_text)
        if row is None:
            raise NotFoundError(f"index {self.name!r} has no document {doc_id!r}", param="doc_id",
                                fix=f"list documents with `agentstack index docs {self.name}`")
        return row

    def chunk(self, chunk_id: int) -> dict[str, Any]:
        """One chunk of the published version, with its document's id, source and title."""
        row = self.store.chunk(int(chunk_id))
        if row is None:
            raise NotFoundError(f"index {self.name!r} has no chunk {chunk_id}", param="chunk_id",
                                fix="use a chunk id returned by a search")
        return row

    # -- stats ----------------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        return self.store.stats()

    def verify(self) -> Any:
        return self.store.verify()

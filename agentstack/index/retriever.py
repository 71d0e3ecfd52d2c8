"""A LangChain ``BaseRetriever`` over an agentstack index.

Each hit becomes a ``Document`` whose ``page_content`` is the chunk text and whose metadata holds
the document id, source, title, heading path, character offsets, score and the document's own
metadata. The async path runs the search in a thread, since the embedding already waits on the
compute worker and SQLite calls are short.
"""

from __future__ import annotations

import asyncio
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForRetrieverRun, CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from pydantic import ConfigDict


class IndexRetriever(BaseRetriever):
    """``IndexRetriever(index=manager.open("demo"), k=4, mode="hybrid", filters={...})``."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    index: Any
    k: int = 4
    mode: str = "hybrid"
    filters: dict[str, Any] | None = None
    min_score: float | None = None

    def _search(self, query: str) -> list[Document]:
        hits = self.index.search(query, k=self.k, mode=self.mode, filters=self.filters, min_score=self.min_score)
        return [Document(page_content=h.text, id=str(h.chunk_id), metadata={
            "index": self.index.name, "chunk_id": h.chunk_id, "doc_id": h.doc_id, "source": h.source,
            "title": h.title, "heading_path": h.heading_path, "start": h.start, "end": h.end,
            "ordinal": h.ordinal, "score": h.score, "scores": h.scores, **{f"meta_{k}": v for k, v in
                                                                         h.metadata.items()}}) for h in hits]

    def _get_relevant_documents(self, query: str, *, run_manager: CallbackManagerForRetrieverRun) -> list[Document]:
        return self._search(query)

    async def _aget_relevant_documents(self, query: str, *,
                                       run_manager: AsyncCallbackManagerForRetrieverRun) -> list[Document]:
        return await asyncio.to_thread(self._search, query)

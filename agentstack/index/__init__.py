"""Indexes with atomic versions and dense, full-text and hybrid retrieval, on one of two backends
behind one protocol (``backend.py``): FAISS + SQLite files, or pgvector tables in PostgreSQL.

Public API (what the server and the CLI call):

* :class:`IndexManager` (``agentstack.index.manager``): list, open, create, add, add_bytes,
  delete, rebuild, verify, drop; :func:`agentstack.index.copy.copy_index` between backends.
* :class:`Index` (``manager.open(name)``): ``search``, ``documents``, ``document``, ``stats``,
  ``verify``, ``as_retriever`` (a LangChain ``BaseRetriever``).
* :func:`ensure_demo_index`: builds the ``demo`` index from the shipped docs if it is missing.

Imports are lazy so ``import agentstack.index`` stays cheap.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Index", "IndexManager", "IndexRetriever", "SearchHit", "ensure_demo_index"]


def __getattr__(name: str) -> Any:
    if name in ("IndexManager", "ensure_demo_index"):
        from agentstack.index import manager

        return getattr(manager, name)
    if name == "Index":
        from agentstack.index.reader import Index

        return Index
    if name == "SearchHit":
        from agentstack.index.search import SearchHit

        return SearchHit
    if name == "IndexRetriever":
        from agentstack.index.retriever import IndexRetriever

        return IndexRetriever
    raise AttributeError(name)

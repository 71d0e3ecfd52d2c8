"""The index protocol: where indexes live (:class:`IndexBackend`), one index (:class:`IndexStore`)
and its write side (:class:`IndexWriter`), with two implementations chosen by ``index.backend``:

* ``faiss`` (:class:`LocalBackend`, ``store.py``): a folder per index under ``<data_dir>/indexes``,
  SQLite (rows, FTS5) + FAISS files, published by an atomic manifest rename. One host.
* ``pgvector`` (``pgvector/``): tables per index in the PostgreSQL database of ``database.url``,
  published by a transaction. Every replica reads the same indexes.

The contract both keep (``tests/replicas/test_index_contract.py`` runs it on each): dense, full-text
and hybrid (RRF) search with metadata filters, ``k`` results even under a narrow filter; a version
(generation) per write, readers seeing the old or the new one, never a mix, and following new ones
without a restart; delete by document; ``verify``; a killed writer losing nothing published.
:class:`~agentstack.index.reader.Index` validates queries and calls a store; the manager drives a
writer. This module knows nothing about SQL or FAISS.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from agentstack.ingest.documents import PreparedDocument

if TYPE_CHECKING:
    from agentstack.config import Settings
    from agentstack.index.search import Query, SearchHit
    from agentstack.index.verify import VerifyReport


@dataclass
class ExportedDocument:
    """One live document with its chunks and their vectors, as a store holds it (for a copy)."""

    row: dict[str, Any]  # doc_id, source, title, format, metadata (dict), fingerprint, content_hash, text,
    #                      n_chunks, ingested_at, added_gen
    chunks: list[dict[str, Any]]  # id, ordinal, start, end, heading_path (list), tokens, text
    vectors: np.ndarray  # (len(chunks), dim) float32, in chunk order


@dataclass
class Export:
    """Everything a copy carries: configuration, spec, ingest log, and the documents (streamed)."""

    name: str
    generation: int
    config: dict[str, Any]
    spec: dict[str, Any]
    counts: dict[str, int]
    ingests: list[dict[str, Any]] = field(default_factory=list)  # kind, at, gen, added..., failures, scrub
    documents: Iterator[ExportedDocument] = field(default_factory=lambda: iter(()))


class IndexWriter(Protocol):
    """Write access to one index, with its lock held (``IndexStore.writer``)."""

    manifest: dict[str, Any]
    notes: list[str]  # what recovery did when the writer opened

    @property
    def generation(self) -> int: ...

    def config(self, gen: int | None = None) -> dict[str, Any]:
        """The configuration (embedder, chunking, vectors, PII) generation ``gen`` was written with."""
        ...

    def fingerprints(self, doc_ids: Sequence[str]) -> dict[str, str]: ...

    def resolve(self, ref: str) -> list[str]:
        """Live document ids whose id or source is ``ref`` (a JSONL file's source: all its records)."""
        ...

    def live_documents(self) -> list[Mapping[str, Any]]:
        """Every live document row (doc_id, source, title, format, metadata as JSON text,
        fingerprint, content_hash, text), in insertion order."""
        ...

    def commit(self, upserts: Sequence[PreparedDocument] = (), deletes: Sequence[str] = (), *,
               replace_all: bool = False, config: dict[str, Any] | None = None,
               report: dict[str, Any] | None = None) -> int:
        """Write and publish one new generation; returns its number."""
        ...

    def load(self, export: Export, progress: Any = None) -> int:
        """Replace the whole content by ``export`` (chunk ids kept), published as one generation."""
        ...


class IndexStore(Protocol):
    """One index: read access for anyone, writes through :meth:`writer`."""

    name: str
    backend: str  # faiss | pgvector

    def manifest(self) -> dict[str, Any]:
        """The published version: name, generation, embedder {id, dim, model}, chunking, pii_policy,
        vectors {requested, kind, params}, counts {documents, chunks}, created_at, updated_at."""
        ...

    def spec(self) -> dict[str, Any]: ...

    def set_spec(self, spec: dict[str, Any]) -> None: ...

    def alive(self) -> bool:
        """Whether the index still exists (a cached store of a dropped index answers False)."""
        ...

    def writer(self, timeout: float = 30.0) -> contextlib.AbstractContextManager[IndexWriter]: ...

    def search(self, query: Query, embedder: Any | None) -> list[SearchHit]: ...

    def documents(self, *, offset: int, limit: int, source_prefix: str | None) -> tuple[list[dict[str, Any]], int]: ...

    def document(self, doc_id: str, *, with_text: bool = False) -> dict[str, Any] | None: ...

    def chunk(self, chunk_id: int) -> dict[str, Any] | None: ...

    def stats(self) -> dict[str, Any]: ...

    def verify(self) -> VerifyReport: ...

    def export(self) -> Export:
        """The published version's content for a copy (documents streamed in chunk-id order)."""
        ...

    def location(self) -> str:
        """Where it lives, for people (a folder, or a redacted database URL and table)."""
        ...

    def close(self) -> None: ...


class IndexBackend(Protocol):
    """Where the indexes of one deployment live."""

    kind: str

    def names(self) -> list[str]: ...

    def exists(self, name: str) -> bool: ...

    def create(self, name: str, *, spec: dict[str, Any], config: dict[str, Any]) -> IndexStore:
        """Create an empty index (generation 0); ConflictError if it exists."""
        ...

    def open(self, name: str) -> IndexStore:
        """The index ``name``; NotFoundError if there is none."""
        ...

    def drop(self, name: str, timeout: float = 30.0) -> None:
        """Remove it entirely, readers never seeing half of it."""
        ...

    def close(self) -> None: ...


class LocalBackend:
    """FAISS + SQLite folders under ``root`` (``<data_dir>/indexes``)."""

    kind = "faiss"

    def __init__(self, root: Path):
        self.root = Path(root)

    def names(self) -> list[str]:
        from agentstack.index.store import MANIFEST

        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if not p.name.startswith(".") and (p / MANIFEST).is_file())

    def exists(self, name: str) -> bool:
        from agentstack.index.store import MANIFEST

        return (self.root / name / MANIFEST).is_file()

    def create(self, name: str, *, spec: dict[str, Any], config: dict[str, Any]) -> IndexStore:
        from agentstack.index.store import LocalStore

        return LocalStore.create(self.root, name, spec=spec, config=config)

    def open(self, name: str) -> IndexStore:
        from agentstack.index.store import LocalStore

        return LocalStore(self.root / name)

    def drop(self, name: str, timeout: float = 30.0) -> None:
        store = self.open(name)
        with store.writer(timeout):
            trash = self.root / f".tmp-drop-{name}-{os.getpid()}"
            os.rename(store.path, trash)
        store.close()
        shutil.rmtree(trash, ignore_errors=True)

    def close(self) -> None:
        pass


def build_backend(settings: Settings, kind: str | None = None, *, database_url: str | None = None,
                  data_dir: Path | None = None) -> IndexBackend:
    """The backend ``kind`` (default: ``settings.index_backend``); ``database_url`` / ``data_dir``
    point pgvector / faiss somewhere other than the settings say (``agentstack index copy``)."""
    kind = kind or settings.index_backend
    if kind == "faiss":
        return LocalBackend(Path(data_dir) / "indexes" if data_dir is not None else settings.indexes_path)
    if kind == "pgvector":
        from agentstack.index.pgvector.backend import PgBackend

        return PgBackend.from_settings(settings, database_url=database_url)
    from agentstack.errors import ConfigError

    raise ConfigError(f"unknown index backend {kind!r}", fix="use faiss or pgvector")

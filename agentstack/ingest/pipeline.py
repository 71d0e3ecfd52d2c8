"""The ingestion pipeline: loaded documents → scrub PII → chunk → embed → store.

:class:`IngestPipeline` takes documents (and load failures) from any loader and hands prepared
documents to a :class:`Sink` in commit groups of about ``commit_every`` chunks; each group becomes
one published index version, so a long ingest that is interrupted keeps every group it reported.
A document whose fingerprint (text, title, format, metadata) equals the stored one is skipped
without being scrubbed or embedded. Every other problem with one document (a scrubber error, no
text left to chunk, a duplicate id) is reported for that document and the rest go on.

Scrub reports hold counts per entity type per document, never the values. Embedding goes through
the embedder's own batching (on the compute worker); the pipeline sorts each group's chunks by
length first so batches carry little padding.

This module knows nothing about files, FAISS or SQLite: the sink (an index writer) stores.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from agentstack.embeddings.base import Embedder
from agentstack.index import faults
from agentstack.ingest.chunking import Chunker
from agentstack.ingest.documents import Document, LoadFailure, PreparedDocument
from agentstack.ingest.pii.base import Scrubber

log = logging.getLogger(__name__)

EMBED_SLICE = 512  # chunks per progress step (each slice is several embedder batches)
Progress = Callable[..., None]


class Sink(Protocol):
    """Where prepared documents go (``agentstack.index.store.IndexWriter`` implements it)."""

    def fingerprints(self, doc_ids: Sequence[str]) -> dict[str, str]: ...

    def commit(self, upserts: Sequence[PreparedDocument] = (), deletes: Sequence[str] = (), *,
               replace_all: bool = False, config: dict[str, Any] | None = None,
               report: dict[str, Any] | None = None) -> int: ...


@dataclass
class IngestReport:
    """What one ingest did. ``added``/``updated``/``unchanged`` list document ids; ``scrub`` maps a
    document id to ``{entity type: count}``."""

    index: str
    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    failures: list[LoadFailure] = field(default_factory=list)
    chunks: int = 0
    generation: int | None = None
    scrub: dict[str, dict[str, int]] = field(default_factory=dict)
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures

    def scrub_totals(self) -> dict[str, int]:
        totals: dict[str, int] = {}
        for counts in self.scrub.values():
            for entity, n in counts.items():
                totals[entity] = totals.get(entity, 0) + n
        return dict(sorted(totals.items()))

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "ok": self.ok, "generation": self.generation, "added": self.added,
                "updated": self.updated, "unchanged": self.unchanged, "deleted": self.deleted,
                "failed": [f.as_dict() for f in self.failures], "chunks": self.chunks,
                "scrub": self.scrub, "scrub_totals": self.scrub_totals(), "seconds": round(self.seconds, 3),
                "notes": self.notes}


class IngestPipeline:
    """One configured pipeline; :meth:`run` may be called many times."""

    def __init__(self, embedder: Embedder, chunker: Chunker,
                 scrubber: Scrubber | Callable[[], Scrubber | None] | None, *, commit_every: int = 2048,
                 progress: Progress | None = None):
        self.embedder = embedder
        self.chunker = chunker
        self._scrubber = scrubber  # or a function building it, called when a document first needs it
        self.commit_every = max(1, commit_every)
        self.progress = progress or (lambda event, **info: None)

    @property
    def scrubber(self) -> Scrubber | None:
        if self._scrubber is not None and not hasattr(self._scrubber, "scrub"):
            self._scrubber = self._scrubber()
        return self._scrubber

    def prepare(self, doc: Document) -> PreparedDocument | LoadFailure:
        """Scrub and chunk one document (vectors are filled in by the group's embedding)."""
        counts: dict[str, int] = {}
        text = doc.text
        if self.scrubber is not None:
            faults.point("scrub")
            try:
                result = self.scrubber.scrub(text)
            except Exception as exc:  # one document's scrubber failure must not stop the others
                log.warning("scrubbing document %s failed: %s", doc.doc_id, type(exc).__name__)
                return LoadFailure(doc.source, "scrub_failed", f"PII scrubbing failed ({type(exc).__name__}); "
                                   "the document was not stored")
            text, counts = result.text, {k: int(v) for k, v in result.counts.items() if v}
        faults.point("chunk")
        chunks = self.chunker.split(text, doc.format)
        if not chunks:
            return LoadFailure(doc.source, "empty", "no text left to index after scrubbing")
        return PreparedDocument(doc.doc_id, doc.source, doc.title, doc.format, dict(doc.metadata), doc.fingerprint,
                                doc.content_hash, text, chunks, np.empty((0, 0), np.float32), counts)

    def run(self, sink: Sink, items: Iterable[Document | LoadFailure], *, index: str = "", kind: str = "ingest",
            config: dict[str, Any] | Callable[[], dict[str, Any]] | None = None) -> IngestReport:
        """Ingest ``items``. ``config`` (the index configuration, or a function returning it when
        the first version is written) is recorded with each version."""
        report = IngestReport(index=index)
        start = time.perf_counter()
        pending: list[tuple[PreparedDocument, bool]] = []  # (document, replaces an existing one)
        pending_chunks = 0
        self._mark = (0, 0)  # unchanged/failures already written to the ingest log
        seen: set[str] = set()
        for item in items:
            if isinstance(item, LoadFailure):
                report.failures.append(item)
                self.progress("document", source=item.source, status="failed", reason=item.reason)
                continue
            if item.doc_id in seen:
                report.failures.append(LoadFailure(item.source, "invalid_record",
                                                   f"duplicate document id {item.doc_id!r} in this ingest"))
                continue
            seen.add(item.doc_id)
            stored = sink.fingerprints([item.doc_id]).get(item.doc_id)
            if stored == item.fingerprint:
                report.unchanged.append(item.doc_id)
                self.progress("document", source=item.source, status="unchanged")
                continue
            prepared = self.prepare(item)
            if isinstance(prepared, LoadFailure):
                report.failures.append(prepared)
                self.progress("document", source=item.source, status="failed", reason=prepared.reason)
                continue
            pending.append((prepared, stored is not None))
            pending_chunks += len(prepared.chunks)
            self.progress("document", source=item.source, status="prepared", chunks=len(prepared.chunks))
            if pending_chunks >= self.commit_every:
                self._flush(sink, pending, report, kind, config)
                pending, pending_chunks = [], 0
        if pending:
            self._flush(sink, pending, report, kind, config)
        report.seconds = time.perf_counter() - start
        return report

    def embed(self, docs: Sequence[PreparedDocument]) -> None:
        """Fill each document's ``vectors``: chunks sorted by length, encoded in slices."""
        texts = [c.text for d in docs for c in d.chunks]
        order = np.argsort([-len(t) for t in texts], kind="stable")
        vectors = np.empty((len(texts), 0), np.float32)
        for i in range(0, len(order), EMBED_SLICE):
            faults.point("embed")
            idx = order[i:i + EMBED_SLICE]
            part = self.embedder.encode([texts[j] for j in idx])
            if vectors.shape[1] == 0:
                vectors = np.empty((len(texts), part.shape[1]), np.float32)
            vectors[idx] = part
            self.progress("embedded", chunks=len(idx))
        at = 0
        for d in docs:
            d.vectors = vectors[at:at + len(d.chunks)]
            at += len(d.chunks)

    def _flush(self, sink: Sink, pending: list[tuple[PreparedDocument, bool]], report: IngestReport,
               kind: str, config: dict[str, Any] | Callable[[], dict[str, Any]] | None) -> None:
        docs = [d for d, _ in pending]
        self.embed(docs)
        added = [d.doc_id for d, replaces in pending if not replaces]
        updated = [d.doc_id for d, replaces in pending if replaces]
        chunks = sum(len(d.chunks) for d in docs)
        scrub = {d.doc_id: d.scrub_counts for d in docs if d.scrub_counts}
        unchanged_at, failures_at = self._mark
        log_entry = {"kind": kind, "added": len(added), "updated": len(updated),
                     "unchanged": len(report.unchanged) - unchanged_at, "chunks": chunks, "scrub": scrub,
                     "failures": [f.as_dict() for f in report.failures[failures_at:]]}
        report.generation = sink.commit(docs, config=config() if callable(config) else config, report=log_entry)
        self._mark = (len(report.unchanged), len(report.failures))
        # only now, with the version published, are these documents reported as ingested
        report.added += added
        report.updated += updated
        report.chunks += chunks
        report.scrub.update(scrub)
        self.progress("committed", generation=report.generation, documents=[d.doc_id for d in docs],
                      chunks=chunks)

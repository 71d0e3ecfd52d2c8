"""What flows through ingestion: loaded documents, per-file failures and chunks.

Plain dataclasses; this module knows nothing about files, models or storage.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np

#: Reasons a source can fail to load, each reported with a human-readable explanation.
FAILURE_CODES = ("missing", "unreadable", "binary", "corrupt_pdf", "empty", "encoding", "too_large",
                 "invalid_record", "scrub_failed")


def content_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def make_doc_id(source: str) -> str:
    """The default document id: 16 hex characters of SHA-256 of the source."""
    return hashlib.sha256(source.encode("utf-8")).hexdigest()[:16]


@dataclass(frozen=True)
class Document:
    """One loaded document. ``text`` is the extracted text (before PII scrubbing)."""

    doc_id: str
    source: str
    title: str
    text: str
    format: str  # text | markdown | html | pdf | jsonl
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def content_hash(self) -> str:
        return content_hash(self.text)

    @property
    def fingerprint(self) -> str:
        """Hash of everything stored about the document; equal fingerprints = nothing to do."""
        meta = json.dumps(self.metadata, sort_keys=True, default=str)
        return hashlib.sha256("\0".join((self.content_hash, self.title, self.format, meta)).encode()).hexdigest()


@dataclass(frozen=True)
class LoadFailure:
    """A source that could not be ingested, and why (``code`` is one of :data:`FAILURE_CODES`)."""

    source: str
    code: str
    reason: str

    def as_dict(self) -> dict[str, str]:
        return {"source": self.source, "code": self.code, "reason": self.reason}


@dataclass(frozen=True)
class Chunk:
    """A piece of a (scrubbed) document. ``start``/``end`` are character offsets into the stored
    document text, so ``text == document_text[start:end]``."""

    ordinal: int
    text: str
    start: int
    end: int
    heading_path: tuple[str, ...] = ()
    tokens: int = 0


@dataclass
class PreparedDocument:
    """A scrubbed, chunked and embedded document, ready to store. ``text`` is the scrubbed text
    the chunk offsets refer to; ``fingerprint``/``content_hash`` are of the loaded document."""

    doc_id: str
    source: str
    title: str
    format: str
    metadata: dict[str, Any]
    fingerprint: str
    content_hash: str
    text: str
    chunks: list[Chunk]
    vectors: np.ndarray
    scrub_counts: dict[str, int] = field(default_factory=dict)

"""Token-aware, heading-aware chunking.

Markdown (and HTML, whose headings the loader keeps as ``#`` lines) is first cut into sections at
ATX headings (``#`` … ``######``, outside fenced code), each remembering its heading path; a
heading with no body of its own joins the section after it. Each section is then split with
LangChain's ``RecursiveCharacterTextSplitter`` (paragraphs, then lines, sentences, words),
measuring length with the embedder's tokenizer, so no chunk exceeds ``chunk_tokens`` tokens and
neighbours share about ``overlap_tokens``. Sections are split separately rather than through
``MarkdownHeaderTextSplitter``, which rewrites the text and loses the character offsets.

Every chunk carries its ordinal, heading path and ``start``/``end`` offsets such that
``text[start:end] == chunk.text``. This module knows nothing about models or storage: it receives
a token-counting function.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from dataclasses import dataclass

from agentstack.errors import ConfigError
from agentstack.ingest.documents import Chunk

_HEADING = re.compile(r"^(#{1,6})[ \t]+(.+?)[ \t#]*$")
_FENCE = re.compile(r"^[ \t]{0,3}(```|~~~)")
SEPARATORS = ["\n\n", "\n", ". ", "? ", "! ", "; ", ", ", " ", ""]


@dataclass(frozen=True)
class ChunkingConfig:
    chunk_tokens: int = 200
    overlap_tokens: int = 32
    markdown_headings: bool = True

    def __post_init__(self) -> None:
        if self.chunk_tokens < 8:
            raise ConfigError(f"chunking.chunk_tokens must be at least 8, got {self.chunk_tokens}",
                              fix="use a larger chunk size (200 suits all-MiniLM-L6-v2)")
        if not 0 <= self.overlap_tokens < self.chunk_tokens:
            raise ConfigError(f"chunking.overlap_tokens must be in [0, chunk_tokens={self.chunk_tokens}), got "
                              f"{self.overlap_tokens}", fix="lower the overlap")


@dataclass(frozen=True)
class Section:
    start: int
    end: int
    heading_path: tuple[str, ...]


def markdown_sections(text: str) -> list[Section]:
    """Cut ``text`` at ATX headings; each section starts at its heading line."""
    bounds: list[tuple[int, tuple[str, ...], bool]] = []  # (start, path, has_heading)
    stack: list[tuple[int, str]] = []
    in_fence = None
    pos = 0
    bounds.append((0, (), False))
    for line in text.split("\n"):
        fence = _FENCE.match(line)
        if fence:
            in_fence = None if in_fence == fence.group(1) else (in_fence or fence.group(1))
        elif in_fence is None:
            match = _HEADING.match(line)
            if match:
                level = len(match.group(1))
                stack = [(lv, title) for lv, title in stack if lv < level] + [(level, match.group(2).strip())]
                bounds.append((pos, tuple(title for _, title in stack), True))
        pos += len(line) + 1
    sections: list[Section] = []
    pending_start: int | None = None
    for i, (start, path, has_heading) in enumerate(bounds):
        end = bounds[i + 1][0] if i + 1 < len(bounds) else len(text)
        body = text[start:end]
        if has_heading:
            body = body.split("\n", 1)[1] if "\n" in body else ""
        if not body.strip():
            if has_heading and pending_start is None:
                pending_start = start  # a heading with nothing under it joins the next section
            continue
        sections.append(Section(start if pending_start is None else pending_start, end, path))
        pending_start = None
    if pending_start is not None:  # trailing headings with no body at all
        sections.append(Section(pending_start, len(text), bounds[-1][1]))
    return sections


class Chunker:
    """Splits documents into :class:`Chunk` s; ``count_tokens`` is the embedder's token counter."""

    def __init__(self, config: ChunkingConfig, count_tokens: Callable[[str], int]):
        from langchain_text_splitters import RecursiveCharacterTextSplitter

        self.config = config
        counter = functools.lru_cache(maxsize=8192)(count_tokens)
        self._count = counter
        self._splitter = RecursiveCharacterTextSplitter(
            chunk_size=config.chunk_tokens, chunk_overlap=config.overlap_tokens, length_function=counter,
            separators=SEPARATORS, keep_separator="end", strip_whitespace=True)

    def split(self, text: str, fmt: str = "text") -> list[Chunk]:
        headed = self.config.markdown_headings and fmt in ("markdown", "html")
        if headed:
            sections = markdown_sections(text)
        else:
            sections = [Section(0, len(text), ())]
        chunks: list[Chunk] = []
        overlap = self.config.overlap_tokens
        for section in sections:
            body = text[section.start:section.end]
            prev: tuple[int, int, int] | None = None  # (start, end, tokens) in ``body``
            pieces = self._splitter.split_text(body)
            if headed and len(pieces) > 1:  # a piece of headings alone adds nothing: every chunk carries its path
                pieces = [p for p in pieces if not all(_HEADING.match(line) for line in p.split("\n") if line)] \
                    or pieces
            for piece in pieces:
                at = self._locate(body, piece, prev, overlap)
                if at < 0:
                    continue  # cannot happen: pieces are substrings of the section
                start = section.start + at
                tokens = self._count(piece)
                chunks.append(Chunk(len(chunks), piece, start, start + len(piece), section.heading_path, tokens))
                prev = (at, at + len(piece), tokens)
        return chunks

    @staticmethod
    def _locate(body: str, piece: str, prev: tuple[int, int, int] | None, overlap: int) -> int:
        """Where ``piece`` starts: after the previous chunk's start, and no earlier than its end
        minus (generously) the overlap, so repeated text does not resolve to an earlier copy."""
        if prev is None:
            return body.find(piece)
        p_start, p_end, p_tokens = prev
        if overlap == 0:
            lower = p_end
        else:
            lower = p_end - int((p_end - p_start) * overlap / max(p_tokens, 1) * 2) - 16
        at = body.find(piece, max(p_start + 1, lower))
        return at if at >= 0 else body.find(piece, p_start + 1)

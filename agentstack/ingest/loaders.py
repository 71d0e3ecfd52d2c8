"""Loaders: bytes or files in, :class:`Document` or :class:`LoadFailure` out.

Formats: plain text, Markdown, HTML (visible text only: scripts, styles and the head dropped;
headings kept as ``#`` lines so chunking can follow them), PDF (pypdf) and JSON Lines (one
document per line: a ``text`` field, optional ``id``, ``title``, ``metadata``; other scalar fields
become metadata). Every problem is returned as a :class:`LoadFailure` naming the source and the
reason: nothing here raises for bad input, so one bad file never stops the others.

Text must be UTF-8 (a BOM is accepted, UTF-16 with a BOM too) unless the source sets another
encoding. This module knows nothing about PII, chunking or storage.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import stat
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from agentstack.ingest.documents import Document, LoadFailure, make_doc_id
from agentstack.ingest.sources import Source, walk

log = logging.getLogger(__name__)

FORMATS = {".txt": "text", ".text": "text", ".md": "markdown", ".markdown": "markdown", ".html": "html",
           ".htm": "html", ".pdf": "pdf", ".jsonl": "jsonl"}
DEFAULT_MAX_BYTES = 20 * 1024 * 1024
Loaded = Document | LoadFailure


def format_for(name: str) -> str:
    return FORMATS.get(Path(name).suffix.lower(), "text")


# -- text decoding ------------------------------------------------------------------------------
def _decode(data: bytes, source: str, encoding: str) -> str | LoadFailure:
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        try:
            return data.decode("utf-16")
        except UnicodeDecodeError as exc:
            return LoadFailure(source, "encoding", f"invalid UTF-16 at byte {exc.start}: {exc.reason}")
    if b"\x00" in data[:8192]:
        return LoadFailure(source, "binary", "binary content (NUL bytes); not a text document")
    codec = "utf-8-sig" if encoding.lower().replace("_", "-") in ("utf-8", "utf8") else encoding
    try:
        return data.decode(codec)
    except UnicodeDecodeError as exc:
        return LoadFailure(source, "encoding", f"not valid {encoding} (byte 0x{data[exc.start]:02x} at offset "
                           f"{exc.start}); convert the file to UTF-8 or set `encoding:` on the source")
    except LookupError:
        return LoadFailure(source, "encoding", f"unknown encoding {encoding!r}")


def _normalise(text: str) -> str:
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return re.sub(r"\n\s*\n(\s*\n)+", "\n\n", text).strip("\n").rstrip()


# -- HTML ---------------------------------------------------------------------------------------
_SKIP = {"script", "style", "noscript", "template", "svg", "head", "iframe", "object"}
_BLOCK = {"p", "div", "section", "article", "header", "footer", "main", "nav", "aside", "ul", "ol", "table",
          "tr", "blockquote", "pre", "hr", "dl", "dt", "dd", "figure", "figcaption", "form", "br", "body"}
_VOID = {"br", "hr", "img", "input", "meta", "link", "area", "base", "col", "embed", "source", "track", "wbr"}


class _HTMLText(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.title = ""
        self._skip = 0
        self._in_title = False
        self._pre = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIP and tag not in _VOID:
            self._skip += 1
        if tag == "title":
            self._in_title = True
        if self._skip:
            return
        if tag == "pre":
            self._pre += 1
        if re.fullmatch(r"h[1-6]", tag):
            self.parts.append("\n\n" + "#" * int(tag[1]) + " ")
        elif tag == "li":
            self.parts.append("\n- ")
        elif tag in ("td", "th"):
            self.parts.append(" ")
        elif tag in _BLOCK:
            self.parts.append("\n\n" if tag not in ("br", "tr") else "\n")

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self._in_title = False
        if tag in _SKIP and tag not in _VOID:
            self._skip = max(0, self._skip - 1)
            return
        if self._skip:
            return
        if tag == "pre":
            self._pre = max(0, self._pre - 1)
        if re.fullmatch(r"h[1-6]", tag) or tag in _BLOCK:
            self.parts.append("\n\n")

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title += data
        if self._skip:
            return
        self.parts.append(data if self._pre else re.sub(r"\s+", " ", data))

    def text(self) -> str:
        # collapsed text leaves at most one space at a line start; deeper indents come from <pre>
        lines = [re.sub(r"^ (?=\S)", "", line.rstrip()) for line in "".join(self.parts).split("\n")]
        return _normalise("\n".join(lines))


def html_to_text(html: str) -> tuple[str, str]:
    """(visible text, <title>) of an HTML page."""
    parser = _HTMLText()
    parser.feed(html)
    parser.close()
    return parser.text(), re.sub(r"\s+", " ", parser.title).strip()


# -- PDF ----------------------------------------------------------------------------------------
def _pdf_text(data: bytes, source: str) -> tuple[str, str, int] | LoadFailure:
    from pypdf import PdfReader
    from pypdf.errors import PyPdfError

    if data.lstrip()[:5] != b"%PDF-":
        return LoadFailure(source, "corrupt_pdf", "not a PDF file (no %PDF- header)")
    logging.getLogger("pypdf").setLevel(logging.ERROR)
    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted and not reader.decrypt(""):
            return LoadFailure(source, "unreadable", "encrypted PDF (a password is needed)")
        pages = [(page.extract_text() or "") for page in reader.pages]
        title = ""
        if reader.metadata is not None and reader.metadata.title:
            title = str(reader.metadata.title)
    except (PyPdfError, ValueError, KeyError, TypeError, IndexError, AttributeError, RecursionError,
            OSError, AssertionError, ZeroDivisionError) as exc:
        return LoadFailure(source, "corrupt_pdf", f"corrupt PDF: {type(exc).__name__}: {str(exc)[:200]}")
    return _normalise("\n\n".join(pages)), title, len(pages)


# -- documents ----------------------------------------------------------------------------------
def _markdown_title(text: str) -> str:
    match = re.search(r"^#{1,2}[ \t]+(.+?)[ \t#]*$", text, re.MULTILINE)
    return match.group(1).strip() if match else ""


def file_of(source: str) -> str:
    """The file a document or failure source names: a JSONL record's source is ``file.jsonl#id``
    (or ``file.jsonl:line`` without an id, as :func:`_jsonl` writes them); others are the file."""
    m = re.match(r"(.*\.jsonl)(?:#.*|:\d+)\Z", source, re.IGNORECASE | re.DOTALL)
    return m.group(1) if m else source


def _jsonl(text: str, source: str, metadata: dict[str, Any]) -> list[Loaded]:
    out: list[Loaded] = []
    for lineno, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        where = f"{source}:{lineno}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            out.append(LoadFailure(where, "invalid_record", f"not valid JSON: {exc.msg} at column {exc.colno}"))
            continue
        if not isinstance(record, dict):
            out.append(LoadFailure(where, "invalid_record", f"a line must be a JSON object, got "
                                   f"{type(record).__name__}"))
            continue
        body = record.get("text")
        if not isinstance(body, str):
            out.append(LoadFailure(where, "invalid_record", "missing or non-string `text` field"))
            continue
        if not body.strip():
            out.append(LoadFailure(where, "empty", "`text` is empty"))
            continue
        meta = dict(metadata)
        extra = record.get("metadata")
        if isinstance(extra, dict):
            meta.update(extra)
        meta.update({k: v for k, v in record.items() if k not in ("text", "id", "title", "metadata")
                     and (v is None or isinstance(v, (str, int, float, bool)))})
        rid = record.get("id")
        doc_id = str(rid) if isinstance(rid, (str, int)) and str(rid).strip() else make_doc_id(where)
        title = str(record.get("title") or f"{Path(source).name}:{lineno}")
        out.append(Document(doc_id, where if rid is None else f"{source}#{rid}", title, _normalise(body),
                            "jsonl", meta))
    if not out:
        out.append(LoadFailure(source, "empty", "no records"))
    return out


def load_bytes(data: bytes, source: str, *, fmt: str | None = None, metadata: dict[str, Any] | None = None,
               encoding: str = "utf-8", max_bytes: int = DEFAULT_MAX_BYTES,
               doc_id: str | None = None) -> list[Loaded]:
    """Documents from one file's bytes. ``source`` names it (path or upload name); ``fmt`` defaults
    to the format its extension implies (unknown extensions are read as plain text)."""
    fmt = fmt or format_for(source)
    metadata = dict(metadata or {})
    if len(data) > max_bytes:
        return [LoadFailure(source, "too_large", f"{len(data):,} bytes is over the limit of {max_bytes:,}")]
    if not data.strip():
        return [LoadFailure(source, "empty", "the file is empty")]
    title = ""
    if fmt == "pdf":
        result = _pdf_text(data, source)
        if isinstance(result, LoadFailure):
            return [result]
        text, title, pages = result
        metadata.setdefault("pages", pages)
        if not text:
            return [LoadFailure(source, "empty", f"no extractable text in {pages} page(s) (a scanned PDF?)")]
    else:
        decoded = _decode(data, source, encoding)
        if isinstance(decoded, LoadFailure):
            return [decoded]
        if fmt == "jsonl":
            return _jsonl(decoded, source, metadata)
        if fmt == "html":
            text, title = html_to_text(decoded)
        else:
            text = _normalise(decoded)
            if fmt == "markdown":
                title = _markdown_title(text)
    if not text.strip():
        return [LoadFailure(source, "empty", "no text after extraction")]
    title = title or Path(source).stem
    return [Document(doc_id or make_doc_id(source), source, title, text, fmt, metadata)]


def load_file(path: Path, *, metadata: dict[str, Any] | None = None, encoding: str = "utf-8",
              max_bytes: int = DEFAULT_MAX_BYTES) -> list[Loaded]:
    """Documents from one file; the source recorded is the absolute path."""
    source = str(Path(os.path.abspath(path)))
    try:
        st = path.stat()
    except FileNotFoundError:
        why = "broken symbolic link" if path.is_symlink() else "no such file or directory"
        return [LoadFailure(source, "missing", why)]
    except OSError as exc:
        return [LoadFailure(source, "unreadable", exc.strerror or str(exc))]
    if not stat.S_ISREG(st.st_mode):
        return [LoadFailure(source, "unreadable", "not a regular file")]
    if st.st_size > max_bytes:
        return [LoadFailure(source, "too_large", f"{st.st_size:,} bytes is over the limit of {max_bytes:,}")]
    try:
        with path.open("rb") as f:
            data = f.read(max_bytes + 1)
    except FileNotFoundError:
        return [LoadFailure(source, "missing", "no such file or directory")]
    except OSError as exc:
        return [LoadFailure(source, "unreadable", exc.strerror or str(exc))]
    return load_bytes(data, source, metadata=metadata, encoding=encoding, max_bytes=max_bytes)


def source_files(source: Source) -> list[Path] | LoadFailure | None:
    """The files a source stands for; a failure if its path is missing (None if it is optional)."""
    path = source.path
    if path.is_dir():
        return list(walk(source))
    if path.exists() or path.is_symlink():
        return [path]
    if source.optional:
        return None
    return LoadFailure(str(Path(os.path.abspath(path))), "missing", "no such file or directory")


def load_source(source: Source, *, max_bytes: int = DEFAULT_MAX_BYTES) -> Iterator[Loaded]:
    """Every document (or failure) of one source, file by file."""
    files = source_files(source)
    if isinstance(files, LoadFailure):
        yield files
        return
    for path in files or []:
        yield from load_file(path, metadata=source.metadata, encoding=source.encoding, max_bytes=max_bytes)

"""Loaders and source walking: every format, and every bad input reported per file with its reason."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest

from agentstack.index.testing import make_pdf
from agentstack.ingest.documents import Document, LoadFailure
from agentstack.ingest.loaders import html_to_text, load_bytes, load_file, load_source
from agentstack.ingest.sources import Source, matches

pytestmark = pytest.mark.unit


def one(items):
    assert len(items) == 1, items
    return items[0]


def test_text_markdown_and_titles(tmp_path: Path):
    (tmp_path / "notes.txt").write_text("first line\r\nsecond\n\n\n\nthird\n")
    (tmp_path / "guide.md").write_text("Intro text\n\n# Guide Title\n\nbody\n")
    txt = one(load_file(tmp_path / "notes.txt"))
    assert isinstance(txt, Document)
    assert txt.text == "first line\nsecond\n\nthird" and txt.title == "notes" and txt.format == "text"
    assert txt.source == str(tmp_path / "notes.txt")
    md = one(load_file(tmp_path / "guide.md", metadata={"team": "docs"}))
    assert md.title == "Guide Title" and md.format == "markdown" and md.metadata == {"team": "docs"}
    assert md.doc_id != txt.doc_id and len(md.content_hash) == 64


def test_html_keeps_visible_text_and_headings_only():
    text, title = html_to_text("<html><head><title> My  Page </title><style>p{color:red}</style>"
                               "<script>var secret = 1;</script></head><body><h1>Top</h1><p>Hello <b>bold</b>"
                               "\n world</p><noscript>enable js</noscript><ul><li>one</li><li>two</li></ul>"
                               "<h2>Sub</h2><p>a &amp; b</p><pre>  keep   spacing</pre></body></html>")
    assert title == "My Page"
    assert "secret" not in text and "color" not in text and "enable js" not in text
    assert text.startswith("# Top\n\nHello bold world")
    assert "- one\n- two" in text and "## Sub" in text and "a & b" in text and "  keep   spacing" in text


def test_pdf_text_title_and_pages():
    doc = one(load_bytes(make_pdf(["Hello PDF world", "Second page"], title="Report"), "r.pdf"))
    assert doc.format == "pdf" and doc.title == "Report" and doc.metadata["pages"] == 2
    assert "Hello PDF world" in doc.text and "Second page" in doc.text


def test_jsonl_records_with_metadata_and_bad_lines():
    data = "\n".join([
        json.dumps({"id": "a1", "text": "alpha text", "title": "Alpha", "lang": "en", "metadata": {"year": 2020}}),
        json.dumps({"text": "beta text", "nested": {"x": 1}}),
        "{not json",
        json.dumps(["a", "list"]),
        json.dumps({"text": "   "}),
        json.dumps({"title": "no text"}),
        "",
    ]).encode()
    out = load_bytes(data, "/data/r.jsonl")
    docs = [d for d in out if isinstance(d, Document)]
    fails = {f.source: f.code for f in out if isinstance(f, LoadFailure)}
    assert [d.doc_id for d in docs][0] == "a1" and docs[0].metadata == {"year": 2020, "lang": "en"}
    assert docs[0].title == "Alpha" and docs[1].metadata == {}  # non-scalar extra fields are not metadata
    assert fails == {"/data/r.jsonl:3": "invalid_record", "/data/r.jsonl:4": "invalid_record",
                     "/data/r.jsonl:5": "empty", "/data/r.jsonl:6": "invalid_record"}


def test_every_bad_input_is_reported_with_its_reason(tmp_path: Path):
    d = tmp_path / "in"
    d.mkdir()
    (d / "good.txt").write_text("fine")
    (d / "empty.md").write_text("")
    (d / "blank.txt").write_text("  \n\t\n")
    (d / "latin1.txt").write_bytes("caf\xe9 cr\xe8me".encode("latin-1"))
    (d / "binary.txt").write_bytes(bytes(range(256)) * 4)
    (d / "corrupt.pdf").write_bytes(b"%PDF-1.4\n1 0 obj << /Type /Catalog >> garbage \x00\x01\x02")
    (d / "fake.pdf").write_bytes(b"this is not a pdf at all")
    (d / "truncated.pdf").write_bytes(make_pdf(["cut short"])[:120])
    (d / "scanned.pdf").write_bytes(make_pdf([""]))
    (d / "big.txt").write_text("x" * 5000)
    (d / "loop.txt").symlink_to(d / "loop.txt")  # ELOOP: cannot be opened, even by root
    (d / "broken.md").symlink_to(d / "nowhere.md")
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(d / "sock.txt"))  # not a regular file
        out = list(load_source(Source(d), max_bytes=4096))
    if os.geteuid() != 0:  # root reads anything, so permissions can only be tested as a normal user
        (d / "secret.txt").write_text("x")
        (d / "secret.txt").chmod(0)
        assert one(load_file(d / "secret.txt")).code == "unreadable"
    got = {Path(f.source).name: f.code for f in out if isinstance(f, LoadFailure)}
    reasons = {Path(f.source).name: f.reason for f in out if isinstance(f, LoadFailure)}
    assert got == {"empty.md": "empty", "blank.txt": "empty", "latin1.txt": "encoding", "binary.txt": "binary",
                   "corrupt.pdf": "corrupt_pdf", "fake.pdf": "corrupt_pdf", "truncated.pdf": "corrupt_pdf",
                   "scanned.pdf": "empty", "big.txt": "too_large", "loop.txt": "unreadable",
                   "broken.md": "missing", "sock.txt": "unreadable"}
    assert [Path(x.source).name for x in out if isinstance(x, Document)] == ["good.txt"]
    assert "offset 3" in reasons["latin1.txt"] and "4,096" in reasons["big.txt"]
    assert "symbolic link" in reasons["broken.md"] and "scanned" in reasons["scanned.pdf"]
    # a missing source is one failure; an optional one is skipped silently
    assert [f.code for f in load_source(Source(tmp_path / "nope"))] == ["missing"]
    assert list(load_source(Source(tmp_path / "nope", optional=True))) == []


def test_other_encodings_by_setting_or_bom(tmp_path: Path):
    (tmp_path / "l.txt").write_bytes("caf\xe9".encode("latin-1"))
    assert one(load_file(tmp_path / "l.txt", encoding="latin-1")).text == "café"
    assert one(load_bytes("hé".encode("utf-16"), "u.txt")).text == "hé"
    assert one(load_bytes(b"\xef\xbb\xbfbom", "b.txt")).text == "bom"


@pytest.mark.parametrize("path,patterns,expected", [
    ("README.md", ["*.md"], True), ("a/b/c.md", ["*.md"], True), ("a/b.txt", ["*.md"], False),
    ("docs/x.md", ["docs/**"], True), ("other/x.md", ["docs/**"], False), (".git", [".*"], True),
    ("a/.cache/x", [".*"], False), ("a/b/c.md", ["a/**/*.md"], True), ("a/c.md", ["a/**/*.md"], True),
    ("b/c.md", ["a/**/*.md"], False), ("x1.md", ["x[0-9].md"], True), ("xa.md", ["x[!0-9].md"], True),
    ("drafts/a.md", ["./drafts/*"], True),
])
def test_globs(path: str, patterns: list[str], expected: bool):
    assert matches(path, patterns) is expected


def test_directory_walk_include_exclude(tmp_path: Path):
    for rel in ("a.md", "b.txt", "c.py", "sub/d.md", "sub/drafts/e.md", ".hidden/f.md", "node_modules/g.md"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(f"content of {rel}")
    names = lambda src: sorted(Path(d.source).relative_to(tmp_path).as_posix() for d in load_source(src))
    assert names(Source(tmp_path)) == ["a.md", "b.txt", "sub/d.md", "sub/drafts/e.md"]
    assert names(Source(tmp_path, include=("*.md",), exclude=(".*", "node_modules", "drafts"))) == ["a.md", "sub/d.md"]
    assert names(Source(tmp_path / "c.py")) == ["c.py"]  # an explicit file is read whatever its extension

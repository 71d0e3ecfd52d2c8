"""Chunking: token-aware sizes with the embedder's tokenizer, overlap, heading paths, exact offsets.

Uses the real all-MiniLM-L6-v2 tokenizer (tokenizer.json only; no weights are loaded)."""

from __future__ import annotations

import pytest

from agentstack.config import EmbedderSettings
from agentstack.embeddings.sentence_transformers import SentenceTransformerEmbedder
from agentstack.errors import ConfigError
from agentstack.ingest.chunking import Chunker, ChunkingConfig, markdown_sections

pytestmark = pytest.mark.unit

DOC = """# Install

Run the installer. It creates a virtual environment and installs every dependency pinned
in the constraints file, then it checks the model files.

## Requirements

```bash
# this is a comment in code, not a heading
pip install thing
```

Python 3.11 or newer.

## Troubleshooting

### Proxy

{proxy}

# Usage

Start the server and open the page.
"""


@pytest.fixture(scope="module")
def embedder() -> SentenceTransformerEmbedder:
    return SentenceTransformerEmbedder(EmbedderSettings())


def test_sections_follow_atx_headings_outside_fences():
    sections = markdown_sections(DOC.format(proxy="Set HTTPS_PROXY."))
    paths = [s.heading_path for s in sections]
    assert paths == [("Install",), ("Install", "Requirements"), ("Install", "Troubleshooting", "Proxy"), ("Usage",)]
    # "## Troubleshooting" has no body of its own: it joins the section after it
    text = DOC.format(proxy="Set HTTPS_PROXY.")
    assert text[sections[2].start:].startswith("## Troubleshooting\n\n### Proxy")


def test_chunks_are_token_bounded_overlapping_and_exact(embedder):
    proxy = " ".join(f"Sentence number {i} explains one more proxy setting in detail." for i in range(80))
    text = DOC.format(proxy=proxy)
    chunker = Chunker(ChunkingConfig(chunk_tokens=64, overlap_tokens=16), embedder.count_tokens)
    chunks = chunker.split(text, "markdown")
    assert [c.ordinal for c in chunks] == list(range(len(chunks)))
    assert len(chunks) > 10
    for c in chunks:
        assert text[c.start:c.end] == c.text
        assert c.tokens == embedder.count_tokens(c.text) <= 64
    proxy_chunks = [c for c in chunks if c.heading_path == ("Install", "Troubleshooting", "Proxy")]
    assert len(proxy_chunks) > 5
    # neighbours inside one section overlap (start before the previous one ends)
    assert all(b.start < a.end for a, b in zip(proxy_chunks, proxy_chunks[1:]))
    assert chunks[-1].heading_path == ("Usage",) and chunks[0].heading_path == ("Install",)
    # the code comment did not start a section
    assert not any("this is a comment" in " ".join(c.heading_path) for c in chunks)


def test_plain_text_has_no_heading_paths(embedder):
    text = "# not a heading in plain text\n\n" + "word " * 300
    chunks = Chunker(ChunkingConfig(chunk_tokens=50, overlap_tokens=0), embedder.count_tokens).split(text, "text")
    assert all(c.heading_path == () for c in chunks)
    assert all(b.start >= a.end for a, b in zip(chunks, chunks[1:]))  # no overlap asked
    assert sum(len(c.text.split()) for c in chunks) == len(text.split())


def test_token_counts_come_from_the_embedder_tokenizer(embedder):
    assert embedder.count_tokens("hello world") == 2
    assert embedder.count_tokens("tokenization") > 1  # word pieces, not words
    assert embedder.max_tokens == 256


@pytest.mark.parametrize("size,overlap", [(4, 0), (100, 100), (100, -1)])
def test_invalid_chunking_is_refused_with_the_value(size, overlap):
    with pytest.raises(ConfigError) as err:
        ChunkingConfig(chunk_tokens=size, overlap_tokens=overlap)
    assert str(size if size < 8 else overlap) in str(err.value)

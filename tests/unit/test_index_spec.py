"""Index specs (validation naming the field and value, path resolution, the shipped demo spec) and
the query helpers (filters, FTS5 query building)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from agentstack.errors import ConfigError, InvalidRequestError
from agentstack.index.search import Query, filter_sql, fts_query, validate
from agentstack.index.spec import check_name, find_spec, load_spec

pytestmark = pytest.mark.unit


def test_spec_paths_resolve_against_the_spec_folder(tmp_path: Path):
    (tmp_path / "specs").mkdir()
    spec_file = tmp_path / "specs" / "kb.yaml"
    spec_file.write_text("description: kb\nsources:\n  - ../docs\n  - {path: /abs/x.md, optional: true}\n"
                         "chunking: {chunk_tokens: 120, overlap_tokens: 10}\nvectors: {kind: hnsw}\n"
                         "pii: {overrides: {entities: {PERSON: null}}}\n")
    spec = load_spec(spec_file)
    sources = spec.resolved_sources()
    assert sources[0].path == (tmp_path / "docs").resolve() and sources[1].optional
    assert spec.chunking.chunk_tokens == 120 and spec.vectors.kind == "hnsw"
    assert spec.pii.overrides == {"entities": {"PERSON": None}}


@pytest.mark.parametrize("body,needle", [
    ("chunking: {chunk_tokens: 100, overlap_tokens: 100}", "overlap_tokens (100)"),
    ("vectors: {kind: annoy}", "vectors.kind = 'annoy'"),
    ("unknown_key: 1", "unknown_key"),
    ("- just a list", "must be a mapping"),
    ("sources: [{path: x, include: '*.md'}]", "sources.0.include"),
])
def test_invalid_specs_name_the_field_and_value(tmp_path: Path, body: str, needle: str):
    path = tmp_path / "bad.yaml"
    path.write_text(body)
    with pytest.raises(ConfigError) as err:
        load_spec(path)
    assert needle in str(err.value) and str(path) in str(err.value)


def test_the_shipped_demo_spec_indexes_the_docs():
    path = find_spec("demo", None)
    assert path is not None
    spec = load_spec(path)
    paths = [s.path for s in spec.resolved_sources()]
    assert paths[0].name == "docs" and paths[0].is_dir()
    assert spec.chunking.chunk_tokens + 2 <= 256 and spec.pii.enabled


@pytest.mark.parametrize("name", ["", "../x", "a/b", ".hidden", "x" * 65, "demo.yaml"])
def test_bad_index_names(name: str):
    with pytest.raises(InvalidRequestError):
        check_name(name)


def test_filters_compile_to_parameterised_sql():
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE documents (doc_id, source, format, title, metadata)")
    rows = [("a", "s1", "markdown", "A", '{"lang": "en", "year": 2020, "draft": true}'),
            ("b", "s2", "pdf", "B", '{"lang": "de", "year": 2021, "draft": false}'),
            ("c", "s3", "text", "C", '{"lang": null}')]
    conn.executemany("INSERT INTO documents VALUES (?, ?, ?, ?, ?)", rows)

    def ids(filters):
        where, params = filter_sql(filters)
        return [r[0] for r in conn.execute(f"SELECT doc_id FROM documents d WHERE 1 {where} ORDER BY doc_id", params)]

    assert ids({"lang": "en"}) == ["a"]
    assert ids({"lang": ["en", "de"]}) == ["a", "b"]
    assert ids({"lang": None}) == ["c"]
    assert ids({"draft": True}) == ["a"] and ids({"draft": False}) == ["b"]
    assert ids({"year": 2021, "format": "pdf"}) == ["b"]
    assert ids({"doc_id": ["a", "c"], "lang": "en"}) == ["a"]
    assert ids({"it's": "x"}) == []  # quotes in values and keys are parameters, not SQL


@pytest.mark.parametrize("filters", [{"k": {"nested": 1}}, {"k": []}, {'a"b': 1}, ["not", "a", "dict"]])
def test_bad_filters_are_refused(filters):
    with pytest.raises(InvalidRequestError) as err:
        filter_sql(filters)
    assert err.value.param == "filters"


def test_fts_query_drops_stop_words_and_quotes_terms():
    assert fts_query("What is the FAISS index?") == '"faiss" OR "index"'
    assert fts_query("the the of") == '"the" OR "of"'  # nothing but stop words: keep them
    assert fts_query('say "NEAR" OR x*') == '"say" OR "near" OR "x"'
    assert fts_query("?!") is None


@pytest.mark.parametrize("query,param", [
    (Query(""), "query"), (Query("   "), "query"), (Query("x" * 2001), "query"), (Query("q", k=0), "k"),
    (Query("q", k=101), "k"), (Query("q", mode="fuzzy"), "mode"), (Query("q", filters={"a": {}}), "filters"),
])
def test_query_validation(query: Query, param: str):
    with pytest.raises(InvalidRequestError) as err:
        validate(query, max_chars=2000, max_k=100)
    assert err.value.param == param and err.value.fix

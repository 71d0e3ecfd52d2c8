"""`agentstack index copy` between FAISS + SQLite files and pgvector, both directions, re-embedding
nothing: the copy runs with an embedder that cannot load, keeps chunk ids, documents, metadata,
the ingest log and PII counts, and searches give the same chunks with the same dense scores."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from agentstack.errors import ConflictError
from agentstack.index.backend import build_backend
from agentstack.index.copy import copy_index
from agentstack.index.manager import IndexManager
from agentstack.index.spec import IndexSpec
from agentstack.index.testing import HashEmbedder

pytestmark = pytest.mark.replicas
ROOT = Path(__file__).resolve().parents[2]
QUERIES = ["alpha word3", "zebra records", "kite over the hill", "topic 7"]


def cli(*args: str, env: dict[str, str], group: str = "index") -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith("AGENTSTACK_")}
    return subprocess.run([sys.executable, "-m", "agentstack.cli", group, *args], capture_output=True, text=True,
                          timeout=300, env={**base, "PYTHONPATH": str(ROOT), **env})


@pytest.fixture
def settings_both(pg_database, tmp_path):
    from agentstack.config import load_settings

    return load_settings(data_dir=tmp_path / "data", database={"url": pg_database, "migrate_on_start": True})


def fill(manager: IndexManager, name: str) -> None:
    manager.create(name, spec=IndexSpec.model_validate({"pii": {"enabled": False}, "vectors": {"kind": "hnsw"},
                                                        "description": "copied"}))
    manager.add_bytes(name, [(f"doc{i}.md", f"# Topic {i}\n\nalpha word{i}. A kite over the hill {i}.\n".encode())
                             for i in range(9)], metadata={"lang": "en"})
    records = "\n".join(json.dumps({"id": f"r{i}", "text": f"zebra records {i}", "year": 2020 + i}) for i in range(3))
    manager.add_bytes(name, [("records.jsonl", records.encode())])
    manager.delete(name, "upload:doc4.md")  # a removed document, and generations past 1


def snapshot(manager: IndexManager, name: str) -> dict:
    index = manager.open(name)
    stats = index.stats()
    return {"documents": index.documents(limit=100)[0],
            "hits": {q: sorted((-round(h.score, 5), h.chunk_id, h.doc_id, h.text, json.dumps(h.metadata),
                                h.heading_path) for h in index.search(q, k=20, mode="dense")) for q in QUERIES},
            "bm25": {q: {h.chunk_id for h in index.search(q, k=20, mode="bm25")} for q in QUERIES},
            "chunk": index.chunk(index.search("word3", k=1, mode="bm25")[0].chunk_id),
            "stats": {k: stats[k] for k in ("documents", "chunks", "tokens", "chunk_chars", "formats", "embedder",
                                            "chunking", "pii_policy", "scrub_totals")},
            "spec": index.store.spec()}


def without(docs: list[dict]) -> list[dict]:
    return [{k: v for k, v in d.items() if k != "added_gen"} for d in docs]


def same(a: dict, b: dict) -> None:
    assert without(a["documents"]) == without(b["documents"])
    assert a["hits"] == b["hits"] and a["chunk"] == b["chunk"] and a["stats"] == b["stats"] and a["spec"] == b["spec"]
    for q in QUERIES:  # full text ranks differently (FTS5 BM25 vs ts_rank); the matches are the same
        assert a["bm25"][q] == b["bm25"][q], q


def test_faiss_to_pgvector_with_the_cli_and_back(settings_both, pg_database, tmp_path):
    faiss_side = IndexManager(settings_both, embedder=HashEmbedder(), backend=build_backend(settings_both, "faiss"))
    fill(faiss_side, "kb")
    before = snapshot(faiss_side, "kb")
    env = {"AGENTSTACK_DATA_DIR": str(settings_both.data_dir), "AGENTSTACK_DATABASE__URL": pg_database,
           "AGENTSTACK_EMBEDDER__MODEL": str(tmp_path / "no-such-model")}  # nothing may be embedded
    assert cli("migrate", env=env, group="db").returncode == 0  # the documented order: schema, then indexes
    done = cli("copy", "kb", "--to", "pgvector", "--json", env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    out = json.loads(done.stdout)["copied"][0]
    assert (out["from"], out["to"], out["documents"], out["chunks"]) == ("faiss", "pgvector", 11, 11)
    pg_side = IndexManager(settings_both, embedder=HashEmbedder(), backend=build_backend(settings_both, "pgvector"))
    try:
        assert pg_side.open("kb").verify().ok
        same(before, snapshot(pg_side, "kb"))
        assert pg_side.open("kb").stats()["last_ingest"]["kind"] == "copy"
        again = cli("copy", "kb", "--to", "pgvector", env=env)  # a non-empty target is refused, nothing changes
        assert again.returncode == 1 and "already exists" in again.stderr
        listed = json.loads(cli("list", "--json", env=env).stdout)  # database.url is PostgreSQL: auto = pgvector
        assert [(r["name"], r["backend"]) for r in listed] == [("kb", "pgvector")]

        pg_side.add_bytes("kb", [("late.md", b"# Late\n\nwritten on the pgvector side\n")])
        back = copy_index(pg_side.backend, faiss_side.backend, "kb", as_name="kb2")  # the other direction
        assert (back["from"], back["to"], back["documents"]) == ("pgvector", "faiss", 12)
        assert faiss_side.open("kb2").verify().ok
        same(snapshot(pg_side, "kb"), snapshot(faiss_side, "kb2"))
        with pytest.raises(ConflictError):
            copy_index(pg_side.backend, faiss_side.backend, "kb")
        dropped = cli("drop", "kb", "--yes", "--json", env=env)
        assert dropped.returncode == 0 and not pg_side.exists("kb")
    finally:
        pg_side.close()
        faiss_side.close()


def test_copy_all_and_a_killed_copy_leaves_nothing_half_done(settings_both, pg_database):
    from agentstack.index import faults

    faiss_side = IndexManager(settings_both, embedder=HashEmbedder(), backend=build_backend(settings_both, "faiss"))
    pg_side = IndexManager(settings_both, embedder=HashEmbedder(), backend=build_backend(settings_both, "pgvector"))
    try:
        fill(faiss_side, "one")
        fill(faiss_side, "two")
        with faults.raising("pg_commit"), pytest.raises(OSError):
            copy_index(faiss_side.backend, pg_side.backend, "one")
        assert not pg_side.exists("one")  # the failed copy removed what it created
        env = {"AGENTSTACK_DATA_DIR": str(settings_both.data_dir), "AGENTSTACK_DATABASE__URL": pg_database}
        done = cli("copy", "--all", "--to", "pgvector", "--json", env=env)
        assert done.returncode == 0, done.stderr[-2000:]
        assert [r["index"] for r in json.loads(done.stdout)["copied"]] == ["one", "two"]
        assert pg_side.names() == ["one", "two"] and all(pg_side.open(n).verify().ok for n in ("one", "two"))
    finally:
        pg_side.close()
        faiss_side.close()

"""One contract for the index protocol, run on both backends: FAISS + SQLite files (the default) and
pgvector in a real PostgreSQL 18 (pgvector 0.8). Same calls, same answers:

* dense, full-text and hybrid search, metadata filters, ``min_score``, documents, chunks, stats;
* versions: a generation per write, unchanged documents skipped, replaced and deleted documents
  (by id, by source, a JSONL file's records) gone from the next version;
* readers (another manager, as another process or replica would hold) follow new versions at once;
* ``k`` results under a filter matching few rows of a large ANN index (the Open WebUI #30135 trap);
* ANN kinds (flat, IVF, HNSW) stay consistent through adds, deletes and ``rebuild --vectors-only``;
* ``verify`` finds a tampered chunk; one writer at a time; an embedder mismatch is refused;
* crash safety: an exception inside a write leaves the published version, and ``kill -9`` of an
  ingest subprocess at random moments loses nothing it reported (one transaction is the publish on
  pgvector, the manifest rename on FAISS).

A fast hash embedder stands in for the model (hundreds of writes must run in seconds); the stores
are real.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from agentstack.errors import ConflictError, InvalidRequestError, NotFoundError
from agentstack.index import faults
from agentstack.index.manager import IndexManager
from agentstack.index.spec import IndexSpec
from agentstack.index.testing import HashEmbedder
from agentstack.ingest.documents import Chunk, PreparedDocument

BACKENDS = [pytest.param("faiss", marks=pytest.mark.integration),
            pytest.param("pgvector", marks=pytest.mark.replicas)]
CHILD = Path(__file__).resolve().parents[1] / "integration" / "index_crash_child.py"
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(params=BACKENDS)
def backend(request, tmp_path) -> dict:
    """Settings overrides (and the env a child process needs) for one backend."""
    if request.param == "faiss":
        return {"kind": "faiss", "overrides": {"data_dir": tmp_path / "data"},
                "env": {"AGENTSTACK_INDEX__BACKEND": "faiss"}}
    url = request.getfixturevalue("pg_database")
    return {"kind": "pgvector", "url": url,
            "overrides": {"data_dir": tmp_path / "data", "database": {"url": url, "migrate_on_start": True}},
            "env": {"AGENTSTACK_INDEX__BACKEND": "pgvector", "AGENTSTACK_DATABASE__URL": url,
                    "AGENTSTACK_DATABASE__MIGRATE_ON_START": "true"}}


def make_manager(backend: dict, **kwargs) -> IndexManager:
    from agentstack.config import load_settings

    return IndexManager(load_settings(**backend["overrides"]), embedder=HashEmbedder(), **kwargs)


@pytest.fixture
def manager(backend):
    m = make_manager(backend)
    assert m.backend.kind == backend["kind"]
    yield m
    m.close()


def spec(**extra) -> IndexSpec:
    return IndexSpec.model_validate({"pii": {"enabled": False}, **extra})


def files(n: int, version: int = 0) -> list[tuple[str, bytes]]:
    return [(f"doc{i:02d}.md", f"# Topic {i}\n\nalpha bravo word{i} version {version}. The {['red', 'green', 'blue'][i % 3]}"
             f" kite flies over hill{i}.\n".encode()) for i in range(n)]


def test_search_modes_filters_documents_and_stats(manager):
    manager.create("kb", spec=spec())
    report = manager.add_bytes("kb", files(12), metadata={"lang": "en"})
    jsonl = "\n".join(json.dumps({"id": f"rec{i}", "text": f"record {i} about zebras", "year": 2020 + i % 2,
                                  "flag": i == 0}) for i in range(4))
    manager.add_bytes("kb", [("records.jsonl", jsonl.encode())])
    assert report.ok and len(report.added) == 12
    index = manager.open("kb")
    for mode in ("dense", "bm25", "hybrid"):
        hits = index.search("word3 hill3", k=3, mode=mode)
        assert hits and hits[0].source == "upload:doc03.md", (mode, hits)
        assert hits[0].heading_path == ["Topic 3"] and hits[0].metadata == {"lang": "en"}
        assert mode in hits[0].scores or mode == "hybrid"
    hybrid = index.search("word3 hill3", k=3, mode="hybrid")
    assert set(hybrid[0].scores) == {"dense", "bm25"}
    assert {h.doc_id for h in index.search("zebras", k=10, mode="bm25", filters={"year": 2021})} == {"rec1", "rec3"}
    assert [h.doc_id for h in index.search("zebras", k=10, mode="dense", filters={"flag": True})] == ["rec0"]
    assert {h.doc_id for h in index.search("zebras", k=10, mode="hybrid", filters={"year": [2020], "lang": None})} \
        == {"rec0", "rec2"}
    assert index.search("kite", k=5, mode="dense", filters={"source": "upload:doc05.md"})[0].source == \
        "upload:doc05.md"
    assert not index.search("kite", k=5, mode="hybrid", filters={"lang": "fr"})
    assert all(h.score >= 0.5 for h in index.search("word3 kite", k=5, mode="dense", min_score=0.5))
    with pytest.raises(InvalidRequestError):
        index.search("kite", filters={"bad key\"": 1})
    with pytest.raises(InvalidRequestError):
        index.search("kite", k=0)
    docs, total = index.documents(limit=5)
    assert total == 16 and len(docs) == 5 and docs[0]["metadata"] in ({"lang": "en"}, {"year": 2020, "flag": True})
    assert index.documents(source_prefix="upload:doc0")[1] == 10
    one = index.document("rec1", with_text=True)
    assert one["text"] == "record 1 about zebras" and one["metadata"] == {"year": 2021, "flag": False}
    hit = index.search("word7", k=1, mode="bm25")[0]
    chunk = index.chunk(hit.chunk_id)
    assert chunk["doc_id"] == hit.doc_id and chunk["text"] == hit.text and chunk["heading_path"] == ["Topic 7"]
    with pytest.raises(NotFoundError):
        index.chunk(10**9)
    with pytest.raises(NotFoundError):
        index.document("nope")
    stats = index.stats()
    assert (stats["documents"], stats["chunks"], stats["backend"]) == (16, 16, manager.backend.kind)
    assert stats["vectors"]["ntotal"] == 16 and stats["last_ingest"]["added"] == 4
    assert [r["name"] for r in manager.list()] == ["kb"] and manager.list()[0]["documents"] == 16


def test_versions_updates_and_deletes(manager):
    manager.create("kb", spec=spec())
    first = manager.add_bytes("kb", files(6))
    again = manager.add_bytes("kb", files(6))
    assert len(again.unchanged) == 6 and not again.added and again.generation == first.generation
    changed = manager.add_bytes("kb", files(2, version=1))
    assert len(changed.updated) == 2 and changed.generation == first.generation + 1
    index = manager.open("kb")
    assert "version 1" in index.document(changed.updated[0], with_text=True)["text"]
    assert not [h for h in index.search("version 0 word0", k=10, mode="bm25") if h.doc_id == changed.updated[0]
                and "version 0" in h.text]
    deleted = manager.delete("kb", "upload:doc05.md")
    assert deleted.generation == changed.generation + 1 and index.documents()[1] == 5
    assert not [h for h in index.search("word5 hill5", k=10, mode="hybrid") if h.source == "upload:doc05.md"]
    jsonl = "\n".join(json.dumps({"id": f"r{i}", "text": f"line {i}"}) for i in range(3))
    manager.add_bytes("kb", [("set.jsonl", jsonl.encode())])
    assert index.documents()[1] == 8
    assert sorted(manager.delete("kb", "upload:set.jsonl").deleted) == ["r0", "r1", "r2"]
    with pytest.raises(NotFoundError):
        manager.delete("kb", "upload:never.md")
    assert index.manifest()["generation"] == index.stats()["generation"] and index.verify().ok


def test_readers_follow_new_versions_without_restart(backend, manager):
    manager.create("kb", spec=spec())
    manager.add_bytes("kb", files(3))
    reader = make_manager(backend)  # another process or replica: its own connections, nothing shared
    try:
        index = reader.open("kb")
        before = index.manifest()["generation"]
        assert not index.search("quokka", k=3, mode="bm25")
        manager.add_bytes("kb", [("new.md", b"# New\n\nA quokka smiles.\n")])
        assert index.search("quokka", k=3, mode="bm25")[0].source == "upload:new.md"  # no reopen, no notice
        assert index.manifest()["generation"] == before + 1 and index.documents()[1] == 4
        manager.delete("kb", "upload:new.md")
        assert "upload:new.md" not in {h.source for h in index.search("quokka", k=3, mode="hybrid")}
        manager.drop("kb")
        with pytest.raises(NotFoundError):
            reader.open("kb").search("quokka", k=3, mode="bm25")
    finally:
        reader.close()


def synthetic(manager: IndexManager, name: str, n: int, kind: str, *, shards: int = 100, dim: int = 64) -> None:
    """``n`` single-chunk documents in clusters, metadata ``shard`` = i % shards, in one write."""
    manager.create(name, spec=spec(vectors={"kind": kind, "min_train": 64, "hnsw_m": 16, "ef_construction": 32,
                                            "ef_search": 16}))
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(20, dim)).astype(np.float32)
    docs = []
    for i in range(n):
        v = centres[i % 20] + 0.3 * rng.normal(size=dim).astype(np.float32)
        text = f"item {i} in shard {i % shards}"
        docs.append(PreparedDocument(f"d{i}", f"syn/{i}", f"item {i}", "text", {"shard": i % shards}, f"f{i}",
                                     f"h{i}", text, [Chunk(0, text, 0, len(text), (), 5)],
                                     (v / np.linalg.norm(v)).reshape(1, dim).astype(np.float32)))
    with manager.open(name).store.writer() as writer:
        writer.commit(docs, report={"kind": "ingest", "added": n, "chunks": n})


def test_a_filter_matching_few_rows_of_a_large_ann_index_still_returns_k(manager, monkeypatch):
    """The shared-table trap: an HNSW walk that finds ef_search neighbours and filters afterwards
    returns fewer than k when 1% of the rows match. Exact search under narrow filters, and (forced
    here for pgvector, with the exact path switched off) iterative scans, must fill k."""
    synthetic(manager, "big", 5000, "hnsw")
    index = manager.open("big")
    for filters in ({"shard": 7}, {"shard": [3, 4]}, {"source": ["syn/10", "syn/20", "syn/30"]}):
        hits = index.search("item in shard", k=10, mode="dense", filters=filters)
        want = min(10, 50 * len(filters.get("shard", [0])) if "shard" in filters and isinstance(filters["shard"], list)
                   else (50 if "shard" in filters else 3))
        assert len(hits) == want, (filters, len(hits))
        allowed = filters.get("shard", None)
        if allowed is not None:
            assert all(h.metadata["shard"] in (allowed if isinstance(allowed, list) else [allowed]) for h in hits)
    monkeypatch.setattr("agentstack.index.pgvector.search.EXACT_FILTER_LIMIT", 0)
    monkeypatch.setattr("agentstack.index.search.EXACT_FILTER_LIMIT", 0)
    hits = index.search("item in shard", k=10, mode="dense", filters={"shard": 7})  # ANN + filter, 1% match
    assert len(hits) == 10 and all(h.metadata["shard"] == 7 for h in hits)
    hybrid = index.search("item in shard", k=10, mode="hybrid", filters={"shard": 7})
    assert len(hybrid) == 10 and all(h.metadata["shard"] == 7 for h in hybrid)


@pytest.mark.replicas
def test_pgvector_iterative_scans_fill_k_where_a_plain_hnsw_walk_does_not(pg_database, tmp_path, monkeypatch):
    """The planner is made to walk the HNSW index (as it does for broad filters on large tables):
    with iterative scans off, a 1% filter gets fewer than k rows; the backend's search gets k."""
    import sqlalchemy as sa

    backend = {"kind": "pgvector", "overrides": {"data_dir": tmp_path / "data",
                                                 "database": {"url": pg_database, "migrate_on_start": True}}}
    engine = sa.create_engine(pg_database)
    with engine.begin() as conn:
        conn.execute(sa.text(f"ALTER DATABASE {pg_database.rsplit('/', 1)[1]} SET enable_seqscan = off"))
    engine.dispose()
    manager = make_manager(backend)
    try:
        synthetic(manager, "big", 5000, "hnsw")
        store = manager.open("big").store
        query = HashEmbedder().encode(["item in shard"])[0]

        def plain_walk(conn, snap):
            t = snap.tables
            sql = (f"SELECT c.id FROM {t.chunks} c JOIN {t.docs} d ON d.row_id = c.doc_row WHERE d.metadata -> "
                   "'shard' = '7'::jsonb ORDER BY c.embedding <#> :q LIMIT 10")
            conn.execute(sa.text("SET LOCAL hnsw.ef_search = 16"))
            conn.execute(sa.text("SET LOCAL hnsw.iterative_scan = off"))
            plan = "\n".join(r[0] for r in conn.execute(sa.text("EXPLAIN " + sql), {"q": query}))
            return plan, len(conn.execute(sa.text(sql), {"q": query}).all())

        plan, found = store.read(plain_walk)
        assert f"{store.read(lambda c, s: s.tables.chunks)}_ann" in plan, plan
        assert found < 10  # the trap: filtered after the walk
        monkeypatch.setattr("agentstack.index.pgvector.search.EXACT_FILTER_LIMIT", 0)
        hits = manager.open("big").search("item in shard", k=10, mode="dense", filters={"shard": 7})
        assert len(hits) == 10 and all(h.metadata["shard"] == 7 for h in hits)
    finally:
        manager.close()


@pytest.mark.parametrize("kind", ["flat", "ivf", "hnsw"])
def test_ann_kinds_stay_consistent_through_writes(manager, kind):
    synthetic(manager, "ann", 600, kind)
    index = manager.open("ann")
    assert index.verify().ok, index.verify().issues
    assert index.manifest()["vectors"]["kind"] == kind
    exact = {h.chunk_id for h in index.search("item 5 in shard 5", k=10, mode="dense", filters={"shard": 5})}
    assert len(exact) == 6
    manager.delete("ann", "d5")
    assert index.verify().ok and index.stats()["chunks"] == 599
    assert "d5" not in {h.doc_id for h in index.search("item 5", k=20, mode="hybrid")}
    report = manager.rebuild("ann", vectors_only=True)
    assert report.generation == index.manifest()["generation"] and index.verify().ok


def tamper(backend: dict, manager: IndexManager, name: str) -> None:
    """Change one stored chunk's text behind the store's back."""
    store = manager.open(name).store
    if backend["kind"] == "faiss":
        from agentstack.storage.sqlite import connect

        conn = connect(store.path / "index.db")
        conn.execute("UPDATE chunks SET text = 'tampered' WHERE id = (SELECT min(id) FROM chunks)")
        conn.close()
    else:
        import sqlalchemy as sa

        t = store.read(lambda conn, snap: snap.tables)
        with store.owner.db.tx() as conn:
            conn.execute(sa.text(f"UPDATE {t.chunks} SET text = 'tampered' WHERE id = (SELECT min(id) FROM {t.chunks})"))


def test_verify_finds_a_tampered_chunk(backend, manager):
    manager.create("kb", spec=spec())
    manager.add_bytes("kb", files(4))
    assert manager.verify("kb").ok
    tamper(backend, manager, "kb")
    report = manager.verify("kb")
    assert not report.ok and any("offsets" in i for i in report.issues), report.issues


def test_one_writer_at_a_time_and_embedder_mismatch(backend, manager):
    manager.create("kb", spec=spec())
    manager.add_bytes("kb", files(2))
    other = make_manager(backend, lock_timeout=0.3)
    try:
        with manager.open("kb").store.writer():
            with pytest.raises(ConflictError, match="being written by another process"):
                other.add_bytes("kb", files(1, version=5))
        assert other.add_bytes("kb", files(1, version=5)).ok
        from agentstack.config import load_settings
        from agentstack.index.store import EmbedderMismatchError

        wrong = IndexManager(load_settings(**backend["overrides"]), embedder=HashEmbedder(dim=32, id="other/hash"))
        try:
            with pytest.raises(EmbedderMismatchError):
                wrong.open("kb").search("alpha", k=2, mode="dense")
            assert wrong.open("kb").search("alpha", k=2, mode="bm25")  # full text needs no embedder
        finally:
            wrong.close()
        with pytest.raises(ConflictError):
            manager.create("kb", spec=spec())
    finally:
        other.close()


WRITE_POINT = {"faiss": "sqlite_write", "pgvector": "pg_write"}
COMMIT_POINT = {"faiss": "manifest_write", "pgvector": "pg_commit"}


@pytest.mark.parametrize("where", ["write", "commit"])
def test_an_exception_inside_a_write_leaves_the_published_version(backend, manager, where):
    manager.create("kb", spec=spec())
    manager.add_bytes("kb", files(4))
    index = manager.open("kb")
    gen = index.manifest()["generation"]
    point = (WRITE_POINT if where == "write" else COMMIT_POINT)[backend["kind"]]
    with faults.raising(point), pytest.raises(OSError):
        manager.add_bytes("kb", files(4, version=2) + [("extra.md", b"# Extra\n\nsomething new\n")])
    assert index.documents()[1] == 4 and "version 0" in index.search("version", k=1, mode="bm25")[0].text
    assert index.verify().ok or backend["kind"] == "faiss"  # FAISS: an unpublished generation is a note
    assert manager.add_bytes("kb", files(4, version=2)).ok
    assert index.manifest()["generation"] > gen and index.verify().ok
    assert "version 2" in index.search("version", k=1, mode="bm25")[0].text


def run_child(backend: dict, data_dir: Path, run: int, mode: str = "kill") -> subprocess.Popen:
    import os

    env = {**{k: v for k, v in os.environ.items() if not k.startswith("AGENTSTACK_")}, "PYTHONPATH": str(ROOT),
           **backend["env"]}
    return subprocess.Popen([sys.executable, str(CHILD), str(data_dir), "crash", str(run), mode],
                            stdout=subprocess.PIPE, text=True, env=env)


def test_kill_9_during_ingest_loses_nothing_published(backend, manager, capsys):
    from tests.integration.test_index_crash import reported

    data_dir = Path(backend["overrides"]["data_dir"])
    manager.create("crash", spec=spec(chunking={"chunk_tokens": 12, "overlap_tokens": 2},
                                      limits={"commit_every_chunks": 8}))
    start = time.monotonic()
    proc = run_child(backend, data_dir, 0)
    lines = proc.communicate(timeout=120)[0].splitlines()
    assert lines[-1] == "DONE", lines[-5:]
    duration = time.monotonic() - start
    reader = manager.open("crash")
    rng = random.Random(int(time.time()))
    phases = []
    for run in range(1, 9):
        proc = run_child(backend, data_dir, run)
        assert proc.stdout is not None and proc.stdout.readline().strip() == "START"
        time.sleep(rng.uniform(0.0, duration * 0.5))
        proc.kill()
        rest = proc.stdout.read().splitlines()
        proc.wait(30)
        phases.append(next((line.split()[1] for line in reversed(rest) if line.startswith("PHASE ")), "start"))
        ingested, deleted, deleting = reported(rest)
        report = reader.verify()
        assert not report.issues, (run, phases[-1], report.issues)
        docs = {d["doc_id"] for d in reader.documents(limit=1000)[0]}
        for doc_id in ingested - deleted:
            assert doc_id in docs or doc_id in deleting, f"{doc_id} was reported as ingested but is missing"
            if doc_id in docs:
                assert f"version {run}." in reader.document(doc_id, with_text=True)["text"]
        assert not deleted & docs
        assert reader.search("alpha1 bravo2 charlie3", k=3, mode="hybrid")
        with reader.store.writer():  # what the next writer does first
            pass
        assert reader.verify().ok and not reader.verify().notes
    with capsys.disabled():
        print(f"\n{backend['kind']}: 8 kills of an ingest, last phase each: {phases}")


def test_rebuilds_keep_the_content_and_change_the_structure(manager, tmp_path):
    manager.create("kb", spec=spec())
    manager.add_bytes("kb", files(8))
    index = manager.open("kb")
    before = [(h.doc_id, h.text) for h in index.search("word3 hill3", k=3, mode="hybrid")]
    new_spec = tmp_path / "hnsw.yaml"
    new_spec.write_text("vectors: {kind: hnsw, hnsw_m: 8, ef_construction: 16, ef_search: 20}\npii: {enabled: false}\n")
    manager.rebuild("kb", spec_path=new_spec, vectors_only=True)
    assert index.manifest()["vectors"]["kind"] == "hnsw" and index.verify().ok, index.verify().issues
    assert [(h.doc_id, h.text) for h in index.search("word3 hill3", k=3, mode="hybrid")] == before
    report = manager.rebuild("kb")  # re-chunk and re-embed everything: one new version
    assert len(report.updated) == 8 and index.verify().ok and index.stats()["documents"] == 8
    assert [(h.doc_id, h.text) for h in index.search("word3 hill3", k=3, mode="hybrid")] == before
    assert index.manifest()["vectors"]["kind"] == "hnsw"

"""Ingestion and retrieval end to end: real all-MiniLM-L6-v2, real FAISS, real SQLite, real PII scrubber."""

from __future__ import annotations

import json
import os
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest

from agentstack.config import EmbedderSettings, load_settings
from agentstack.embeddings.sentence_transformers import SentenceTransformerEmbedder, default_model_dir
from agentstack.errors import ConflictError, InvalidRequestError, NotFoundError
from agentstack.index.manager import IndexManager, ensure_demo_index
from agentstack.index.spec import IndexSpec
from agentstack.index.store import EmbedderMismatchError
from agentstack.index.testing import make_pdf

pytestmark = pytest.mark.integration

NO_PII = {"pii": {"enabled": False}}


@pytest.fixture(scope="module")
def embedder() -> SentenceTransformerEmbedder:
    e = SentenceTransformerEmbedder(EmbedderSettings())
    e.warm_up()
    return e


@pytest.fixture
def manager(settings, embedder) -> IndexManager:
    return IndexManager(settings, embedder=embedder)


def write_corpus(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "cats.md").write_text("# Cats\n\nCats are small carnivorous mammals kept as pets. A cat purrs when "
                                  "content and grooms its fur with a rough tongue; whiskers help it feel its way.\n")
    (root / "rockets.md").write_text("# Rockets\n\n## Propulsion\n\nLiquid-fuel rockets burn kerosene with liquid "
                                     "oxygen in a combustion chamber, and the nozzle accelerates the exhaust.\n\n"
                                     "## Staging\n\nSpent stages are dropped to shed mass during the ascent.\n")
    (root / "bread.txt").write_text("Baking bread: mix flour, water, salt and yeast, knead the dough, let it rise "
                                    "for two hours, then bake it in a hot oven until the crust is brown.\n")
    (root / "volcano.html").write_text("<html><head><title>Volcanoes</title><script>track()</script></head><body>"
                                       "<h1>Volcanoes</h1><p>Magma rises through the crust and erupts as lava, ash "
                                       "and gas.</p></body></html>")
    (root / "plants.pdf").write_bytes(make_pdf(["Photosynthesis converts sunlight into chemical energy in the "
                                                "chloroplasts of plant leaves."], title="Plants"))
    (root / "places.jsonl").write_text(
        json.dumps({"id": "eiffel", "text": "The Eiffel Tower stands in Paris and was completed in 1889.",
                    "topic": "landmark"}) + "\n" +
        json.dumps({"id": "wall", "text": "The Great Wall of China is a series of fortifications built over "
                    "centuries.", "topic": "landmark", "metadata": {"country": "China"}}) + "\n")
    return root


def create_kb(manager: IndexManager, root: Path, name: str = "kb", **spec):
    return manager.create(name, spec=IndexSpec.model_validate({**NO_PII, **spec}), paths=[write_corpus(root)])


def live_chunk_ids(manager: IndexManager, name: str) -> dict[str, list[int]]:
    index = manager.open(name)
    g = index.store.snapshot().generation
    rows = index.store.db.query("SELECT d.doc_id, c.id FROM chunks c JOIN documents d ON d.row_id = c.doc_row WHERE "
                                "c.added_gen <= ? AND (c.removed_gen IS NULL OR c.removed_gen > ?)", (g, g))
    out: dict[str, list[int]] = {}
    for r in rows:
        out.setdefault(r[0], []).append(r[1])
    return out


def test_incremental_add_update_delete(manager, tmp_path):
    report = create_kb(manager, tmp_path / "corpus")
    assert report.ok and len(report.added) == 7 and report.generation == 1
    index = manager.open("kb")
    before = live_chunk_ids(manager, "kb")
    assert sorted(index.store.snapshot().vectors.ids()) == sorted(i for ids in before.values() for i in ids)

    again = manager.add("kb")  # the stored spec's sources
    assert again.ok and len(again.unchanged) == 7 and not again.added and not again.updated
    assert again.generation == 1 and index.manifest()["generation"] == 1  # nothing written at all

    cats = next(d["doc_id"] for d in index.documents()[0] if d["title"] == "Cats")
    (tmp_path / "corpus" / "cats.md").write_text("# Cats\n\nA tabby cat has a striped coat and an M on its forehead.\n")
    changed = manager.add("kb")
    assert changed.updated == [cats] and len(changed.unchanged) == 6 and changed.generation == 2
    after = live_chunk_ids(manager, "kb")
    assert set(after[cats]).isdisjoint(before[cats])  # the changed document's chunks were replaced
    assert {d: ids for d, ids in after.items() if d != cats} == {d: ids for d, ids in before.items() if d != cats}
    assert manager.open("kb").search("striped tabby coat", k=1, mode="dense")[0].doc_id == cats

    deleted = manager.delete("kb", str(tmp_path / "corpus" / "cats.md"))  # by source
    assert deleted.deleted == [cats]
    vectors = index.store.snapshot().vectors
    assert not set(after[cats]) & set(vectors.ids().tolist())
    assert cats not in {h.doc_id for h in index.search("cat purrs", k=10, mode="hybrid")}
    assert manager.delete("kb", "eiffel").deleted == ["eiffel"]  # by document id
    docs, total = index.documents()
    assert total == 5 and {"eiffel", cats}.isdisjoint(d["doc_id"] for d in docs)
    with pytest.raises(NotFoundError):
        manager.delete("kb", "no-such-doc")
    assert index.verify().ok, index.verify().issues
    assert index.stats()["chunks"] == index.store.snapshot().vectors.ntotal


def test_prune_follows_deletions_and_loses_nothing_else(manager, tmp_path):
    root = tmp_path / "corpus"
    create_kb(manager, root)
    other = tmp_path / "elsewhere"
    other.mkdir()
    (other / "notes.txt").write_text("Kept notes about tide pools, anemones and hermit crabs on a rocky shore.\n")
    [notes] = manager.add("kb", [other]).added  # a document from outside the spec's sources
    index = manager.open("kb")

    def live() -> dict[str, str]:  # doc id -> file name
        return {d["doc_id"]: Path(d["source"]).name for d in index.documents(limit=50)[0]}

    before = live()
    cats = next(i for i, f in before.items() if f == "cats.md")
    (root / "cats.md").unlink()
    kept = manager.add("kb")  # without --prune a vanished file stays
    assert not kept.deleted and cats in live()

    (root / "places.jsonl").write_text(json.dumps({"id": "eiffel", "text": "The Eiffel Tower stands in Paris "
                                                   "and was completed in 1889.", "topic": "landmark"}) + "\n")
    (root / "bread.txt").write_bytes(b"")  # fails to load this time (empty): its document stays
    pruned = manager.add("kb", prune=True)
    assert sorted(pruned.deleted) == sorted([cats, "wall"]), pruned.to_dict()
    assert [f.source for f in pruned.failures] == [str(root / "bread.txt")]
    after = live()
    assert after == {i: f for i, f in before.items() if i not in (cats, "wall")}
    assert notes in after and "bread.txt" in after.values() and "eiffel" in after
    assert "wall" not in {h.doc_id for h in index.search("Great Wall of China fortifications", k=10, mode="hybrid")}
    assert pruned.generation == index.manifest()["generation"] and index.verify().ok

    shutil.rmtree(root)  # a source missing altogether (an unmounted disk?) is reported, and nothing is deleted
    gone = manager.add("kb", prune=True)
    assert not gone.deleted and [f.code for f in gone.failures] == ["missing"]
    assert live() == after


def test_bad_input_is_reported_per_file_and_the_rest_ingests(manager, tmp_path):
    root = write_corpus(tmp_path / "mixed")
    (root / "empty.md").write_text("")
    (root / "latin1.txt").write_bytes("na\xefve".encode("latin-1"))
    (root / "blob.txt").write_bytes(os.urandom(2048) + b"\x00")
    (root / "broken.pdf").write_bytes(b"%PDF-1.7\n" + os.urandom(500))
    (root / "huge.txt").write_text("big " * 200_000)
    (root / "gone.md").symlink_to(root / "nowhere.md")
    spec = IndexSpec.model_validate({**NO_PII, "limits": {"max_file_bytes": 100_000}})
    report = manager.create("mixed", spec=spec, paths=[root, tmp_path / "missing-dir"])
    codes = {Path(f.source).name: f.code for f in report.failures}
    assert codes == {"missing-dir": "missing", "empty.md": "empty", "latin1.txt": "encoding", "blob.txt": "binary",
                     "broken.pdf": "corrupt_pdf", "huge.txt": "too_large", "gone.md": "missing"}
    assert all(f.reason for f in report.failures)
    assert len(report.added) == 7 and not report.ok
    index = manager.open("mixed")
    assert index.verify().ok
    log = index.store.db.query("SELECT failed, failures FROM ingests ORDER BY id DESC LIMIT 1")[0]
    assert log["failed"] == 7 and "too_large" in log["failures"]


def test_retrieval_modes_filters_threshold_and_errors(manager, tmp_path):
    create_kb(manager, tmp_path / "corpus")
    index = manager.open("kb")
    top = lambda q, mode, **kw: index.search(q, k=kw.pop("k", 3), mode=mode, **kw)[0]
    assert top("feline pets that purr", "dense").title == "Cats"
    assert top("kerosene oxygen nozzle", "bm25").title == "Rockets"
    assert top("how to bake a loaf with yeast", "hybrid").title == "bread"
    hit = top("combustion chamber propellant", "hybrid")
    assert hit.heading_path == ["Rockets", "Propulsion"] and set(hit.scores) == {"dense", "bm25"}
    assert index.store.db.query("SELECT text FROM documents WHERE doc_id = ?", (hit.doc_id,))[0][0][hit.start:hit.end] \
        == hit.text
    assert top("plant energy from light", "dense").title == "Plants"
    assert top("erupting lava", "dense").title == "Volcanoes"

    landmark = index.search("tall iron structure", k=10, mode="dense", filters={"topic": "landmark"})
    assert [h.doc_id for h in landmark] == ["eiffel", "wall"]
    assert [h.doc_id for h in index.search("wall", k=10, mode="bm25", filters={"country": "China"})] == ["wall"]
    assert {h.title for h in index.search("anything", k=10, mode="hybrid", filters={"format": ["pdf", "html"]})} \
        == {"Plants", "Volcanoes"}
    assert index.search("cats", k=5, mode="dense", filters={"topic": "nope"}) == []
    assert len(index.search("science", k=1, mode="hybrid")) == 1
    scores = [h.score for h in index.search("feline", k=7, mode="dense")]
    assert scores == sorted(scores, reverse=True) and len(scores) == 7
    assert index.search("feline", k=7, mode="dense", min_score=scores[2]) and \
        all(h.score >= scores[2] for h in index.search("feline", k=7, mode="dense", min_score=scores[2]))
    assert index.search("feline", k=7, mode="dense", min_score=0.99) == []

    for bad, param in ((dict(query=""), "query"), (dict(query="x" * 5000), "query"), (dict(query="q", k=0), "k"),
                       (dict(query="q", mode="sparse"), "mode")):
        with pytest.raises(InvalidRequestError) as err:
            index.search(**bad)
        assert err.value.param == param
    with pytest.raises(NotFoundError):
        manager.open("unknown")


def test_langchain_retriever(manager, tmp_path):
    import asyncio

    create_kb(manager, tmp_path / "corpus")
    retriever = manager.open("kb").as_retriever(k=2, mode="hybrid")
    docs = retriever.invoke("rocket staging during ascent")
    assert len(docs) == 2 and docs[0].metadata["title"] == "Rockets"
    assert docs[0].metadata["heading_path"] == ["Rockets", "Staging"] and docs[0].page_content
    adocs = asyncio.run(retriever.ainvoke("Eiffel Tower"))
    assert adocs[0].metadata["doc_id"] == "eiffel" and adocs[0].metadata["meta_topic"] == "landmark"


def test_embedder_mismatch_is_refused_and_rebuild_fixes_it(settings, manager, tmp_path):
    create_kb(manager, tmp_path / "corpus")
    other_dir = tmp_path / "minilm-copy"
    other_dir.symlink_to(default_model_dir(), target_is_directory=True)  # same weights, another embedder id
    other_settings = load_settings(data_dir=settings.data_dir, embedder={"model": str(other_dir)})
    other = IndexManager(other_settings)
    index = other.open("kb")
    with pytest.raises(EmbedderMismatchError) as err:
        index.search("cats", mode="dense")
    assert "sentence-transformers/all-MiniLM-L6-v2" in str(err.value) and "rebuild" in err.value.fix
    assert index.search("cats", mode="bm25")  # BM25 needs no embedder
    (tmp_path / "corpus" / "new.txt").write_text("a new document")
    with pytest.raises(EmbedderMismatchError):
        other.add("kb")
    report = other.rebuild("kb")
    assert len(report.updated) == 7 and report.ok
    assert other.open("kb").manifest()["embedder"]["id"].startswith("local/minilm-copy@")
    assert other.open("kb").search("feline pets", k=1, mode="dense")[0].title == "Cats"
    with pytest.raises(EmbedderMismatchError):  # and now the default embedder is the stranger
        manager.open("kb").search("cats", mode="hybrid")


def test_rebuild_with_new_chunking_keeps_fingerprints(manager, tmp_path):
    create_kb(manager, tmp_path / "corpus")
    before = manager.open("kb").stats()["chunks"]
    spec_file = tmp_path / "small.yaml"
    spec_file.write_text(f"sources: [{tmp_path / 'corpus'}]\nchunking: {{chunk_tokens: 12, overlap_tokens: 2}}\n"
                         "pii: {enabled: false}\n")
    report = manager.rebuild("kb", spec_path=spec_file)
    stats = manager.open("kb").stats()
    assert stats["chunks"] > before and stats["chunking"]["chunk_tokens"] == 12 and report.ok
    assert manager.open("kb").verify().ok
    assert len(manager.add("kb").unchanged) == 7  # rebuilt documents still match their sources

    ids = live_chunk_ids(manager, "kb")
    spec_file.write_text(spec_file.read_text() + "vectors: {kind: hnsw, hnsw_m: 8}\n")
    manager.rebuild("kb", spec_path=spec_file, vectors_only=True)  # no re-embedding: same chunks
    index = manager.open("kb")
    assert index.manifest()["vectors"]["kind"] == "hnsw" and live_chunk_ids(manager, "kb") == ids
    assert index.verify().ok and index.search("feline pets", k=1, mode="dense")[0].title == "Cats"


@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
def test_ann_indexes_stay_consistent(manager, tmp_path, kind):
    root = tmp_path / "many"
    root.mkdir()
    topics = ["astronomy", "cooking", "football", "chemistry", "painting", "sailing", "farming", "music"]
    lines = [json.dumps({"id": f"r{i}", "text": f"Record {i} is about {topics[i % 8]} and number {i}.",
                         "topic": topics[i % 8]}) for i in range(160)]
    (root / "records.jsonl").write_text("\n".join(lines))
    spec = {**NO_PII, "vectors": {"kind": kind, "min_train": 100, "nlist": 8, "nprobe": 8}}
    manager.create("ann", spec=IndexSpec.model_validate(spec), paths=[root])
    index = manager.open("ann")
    assert index.manifest()["vectors"]["kind"] == kind
    assert index.search("Record 42 is about football and number 42.", k=1, mode="dense")[0].doc_id == "r42"
    filtered = index.search("sailing", k=5, mode="dense", filters={"topic": "sailing"})
    assert len(filtered) == 5 and {h.metadata["topic"] for h in filtered} == {"sailing"}
    manager.delete("ann", "r42")  # HNSW cannot remove: the graph is rebuilt
    assert index.verify().ok, index.verify().issues
    assert "r42" not in {h.doc_id for h in index.search("Record 42 is about football and number 42.", k=5,
                                                        mode="dense")}


def test_writer_lock_and_readers_follow_new_versions(settings, manager, embedder, tmp_path):
    create_kb(manager, tmp_path / "corpus")
    reader = manager.open("kb")  # e.g. the server's handle, kept open
    assert reader.search("glacier", k=1, mode="bm25") == []
    other = IndexManager(settings, embedder=embedder, lock_timeout=0.3)  # e.g. a CLI process
    (tmp_path / "extra").mkdir()
    (tmp_path / "extra" / "ice.md").write_text("# Glaciers\n\nA glacier is a slowly moving river of ice.\n")
    other.add("kb", [tmp_path / "extra"])
    assert reader.search("glacier", k=1, mode="bm25")[0].title == "Glaciers"  # no reopen, no restart

    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with reader.store.writer():
            held.set()
            release.wait(10)

    thread = threading.Thread(target=hold)
    thread.start()
    held.wait(10)
    try:
        with pytest.raises(ConflictError) as err:
            other.add("kb", [tmp_path / "extra"])
        assert "being written" in str(err.value)
        assert reader.search("glacier", k=1, mode="hybrid")  # readers never wait for the lock
    finally:
        release.set()
        thread.join()


def test_pii_is_scrubbed_before_anything_is_stored(manager, tmp_path):
    root = tmp_path / "pii"
    root.mkdir()
    phone, ip = "+1 415 555 0199", "203.0.113.77"
    (root / "ticket.txt").write_text(f"Server at {ip} is down. Call the on-call engineer at {phone} at once.\n")
    (root / "clean.txt").write_text("Nothing personal here, only a note about disk quotas.\n")
    report = manager.create("pii", paths=[root])  # default policy from policies/pii.yaml
    ticket = next(d for d in report.added if d in report.scrub)
    assert report.scrub[ticket].get("PHONE_NUMBER") == 1 and report.scrub[ticket].get("IP_ADDRESS") == 1
    assert len(report.scrub) == 1  # the clean document has nothing to report
    assert phone not in json.dumps(report.to_dict()) and ip not in json.dumps(report.to_dict())
    index = manager.open("pii")
    assert index.manifest()["pii_policy"].startswith("pii-default")
    for path in index.store.path.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert phone.encode() not in data and ip.encode() not in data, path
    assert "<PHONE_NUMBER>" in index.search("on-call engineer phone", k=1, mode="bm25")[0].text
    assert index.stats()["scrub_totals"] == {"IP_ADDRESS": 1, "PHONE_NUMBER": 1}


def test_demo_index_is_built_then_kept_up_to_date(settings, embedder):
    first = ensure_demo_index(settings, embedder=embedder)
    assert first is not None and first.ok and len(first.added) >= 3
    manager = IndexManager(settings, embedder=embedder)
    for doc_id in first.added[1:]:  # as if the first start had been interrupted after one document
        manager.delete("demo", doc_id)
    report = ensure_demo_index(settings, embedder=embedder)  # the next start finishes the build
    assert report is not None and report.ok and sorted(report.added) == sorted(first.added[1:])
    assert len(report.unchanged) == 1
    fresh = SentenceTransformerEmbedder(EmbedderSettings())
    again = ensure_demo_index(settings, embedder=fresh)
    assert again is not None and not again.added and not again.updated and len(again.unchanged) >= 3
    assert fresh._model is None  # nothing changed, so the model was never loaded
    assert again.generation == report.generation
    index = IndexManager(settings, embedder=embedder).open("demo")
    from agentstack.resources import shipped_dir

    # a sentence of the shipped docs finds its own file (the docs change; the property should not)
    sentence = next(line for line in (shipped_dir("docs") / "development.md").read_text().splitlines()
                    if len(line.split()) > 8)
    hits = index.search(sentence, k=3)
    assert any(h.source.endswith("development.md") for h in hits)
    assert {d["metadata"].get("collection") for d in index.documents()[0]} <= {"docs", "readme", None}
    assert np.isclose(np.linalg.norm(embedder.encode(["x"])[0]), 1.0)


def test_drop_removes_the_index_and_readers_see_it_gone(manager, tmp_path):
    create_kb(manager, tmp_path / "corpus")
    reader = manager.open("kb")
    manager.drop("kb")
    assert not manager.exists("kb") and manager.names() == []
    assert not any(p.name.startswith(".tmp-drop") for p in manager.root.iterdir())
    with pytest.raises(NotFoundError):
        reader.search("cats", mode="bm25")
    with pytest.raises(NotFoundError):
        manager.open("kb")

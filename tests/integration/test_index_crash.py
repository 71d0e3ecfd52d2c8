"""Crash safety of index writes: named fault points and real ``kill -9`` of an ingest subprocess.

After every crash: the index loads and ``verify`` finds no inconsistency (an unpublished generation
is allowed: it is a note, finished by the next writer); a reader opened before the crash keeps
answering; every document the child reported as ingested is present with that run's content; and
after a writer's recovery the index verifies clean with nothing pending.

A fast hash embedder stands in for the model here (thousands of commits must run in seconds); FAISS
and SQLite are real. Run with ``-s`` to see the table of kills and the phase each landed in.
"""

from __future__ import annotations

import random
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from agentstack.index import faults
from agentstack.index.faults import POINTS
from agentstack.index.manager import IndexManager
from agentstack.index.spec import IndexSpec
from agentstack.index.store import IndexStore
from agentstack.index.testing import HashEmbedder
from agentstack.index.verify import verify

pytestmark = pytest.mark.integration

CHILD = Path(__file__).with_name("index_crash_child.py")
NAME = "crash"
WRITE_POINTS = ["sqlite_write", "sqlite_commit", "sqlite_committed", "faiss_sync", "faiss_write", "faiss_written",
                "manifest_write", "published", "cleanup"]
COMMITTED = {"sqlite_committed", "faiss_sync", "faiss_write", "faiss_written", "manifest_write"}


@pytest.fixture
def manager(settings) -> IndexManager:
    manager = IndexManager(settings, embedder=HashEmbedder())
    spec = IndexSpec.model_validate({"pii": {"enabled": False}, "chunking": {"chunk_tokens": 12, "overlap_tokens": 2},
                                     "limits": {"commit_every_chunks": 8}})
    manager.create(NAME, spec=spec)
    return manager


def run_child(data_dir: Path, run: int, mode: str) -> list[str]:
    proc = subprocess.run([sys.executable, str(CHILD), str(data_dir), NAME, str(run), mode], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode in (0, 137), proc.stderr[-2000:]
    return proc.stdout.splitlines()


def reported(lines: list[str]) -> tuple[set[str], set[str], set[str]]:
    """(reported ingested, reported deleted, being deleted when killed: may be either)."""
    from agentstack.ingest.documents import make_doc_id

    ingested = {d for line in lines if line.startswith("INGESTED ") for d in line.split()[2:]}
    deleted = {line.split()[2] for line in lines if line.startswith("DELETED ")}
    deleting = {make_doc_id(line.split()[1]) for line in lines if line.startswith("DELETING ")} - deleted
    return ingested, deleted, deleting


def check_after_crash(manager: IndexManager, reader, lines: list[str], run: int) -> dict:
    """The invariants every crash must keep; returns what verify saw before recovery."""
    path = manager.root / NAME
    before = verify(IndexStore(path))
    assert not before.issues, before.issues
    ingested, deleted, deleting = reported(lines)
    docs = {d["doc_id"] for d in reader.documents(limit=1000)[0]}
    for doc_id in ingested - deleted:
        assert doc_id in docs or doc_id in deleting, f"{doc_id} was reported as ingested but is missing"
        if doc_id in docs:
            assert f"version {run}." in reader.document(doc_id, with_text=True)["text"]
    assert not deleted & docs
    assert reader.search("alpha1 bravo2 charlie3", k=3, mode="hybrid")  # a live reader keeps working
    with IndexStore(path).writer() as writer:  # what any next writer does first
        notes = writer.notes
    after = verify(IndexStore(path))
    assert not after.issues and not after.notes, (after.issues, after.notes)
    return {"pending": any("not published" in n for n in before.notes), "recovered": notes,
            "generation": before.checked.get("generation")}


@pytest.mark.parametrize("point", WRITE_POINTS)
def test_crash_at_each_named_point(manager, settings, point):
    """``os._exit`` at one point of the second commit: the first commit survives; the second is
    rolled back (crash inside the transaction) or rolled forward by recovery (after COMMIT)."""
    run_child(settings.data_dir, 0, "kill")  # a complete first version of every document
    reader = manager.open(NAME)
    gen0 = reader.manifest()["generation"]
    lines = run_child(settings.data_dir, 1, f"fault:{point}")
    assert lines[-1] == f"PHASE {point}" and "DONE" not in lines
    assert len([line for line in lines if line.startswith("INGESTED")]) == 1
    published_now = reader.manifest()["generation"]
    state = check_after_crash(manager, reader, lines, 1)
    final = reader.manifest()["generation"]
    if point in ("sqlite_write", "sqlite_commit"):
        assert published_now == gen0 + 1 and final == gen0 + 1 and not state["pending"]
    elif point in COMMITTED:
        assert published_now == gen0 + 1 and state["pending"] and final == gen0 + 2
        assert any("published generation" in n for n in state["recovered"])
    else:  # published / cleanup: the new version was already visible
        assert published_now == gen0 + 2 and final == gen0 + 2


def _docs(run: int) -> list[tuple[str, bytes]]:
    sys.path.insert(0, str(CHILD.parent))
    try:
        from index_crash_child import documents
    finally:
        sys.path.pop(0)
    return documents(run)


@pytest.mark.parametrize("point", ["sqlite_write", "sqlite_committed", "faiss_write", "manifest_write"])
def test_exceptions_at_named_points_leave_the_index_usable(manager, point):
    with faults.raising(point), pytest.raises(OSError):
        manager.add_bytes(NAME, _docs(0))
    assert not manager.open(NAME).verify().issues
    report = manager.add_bytes(NAME, _docs(0))
    assert report.ok and manager.open(NAME).verify().ok
    assert manager.open(NAME).stats()["documents"] == 24


def _timed_run(data_dir: Path, run: int) -> tuple[float, float]:
    """One whole ingest run: seconds after START to its first write or commit phase, and to its end."""
    proc = subprocess.Popen([sys.executable, str(CHILD), str(data_dir), NAME, str(run), "kill"],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "START"
    start, first_write, lines = time.monotonic(), None, []
    for line in proc.stdout:
        lines.append(line.strip())
        if first_write is None and line.startswith("PHASE ") and POINTS.get(line.split()[1]) in ("write", "commit"):
            first_write = time.monotonic() - start
    duration = time.monotonic() - start
    assert proc.wait(120) == 0 and lines[-1] == "DONE" and first_write is not None, lines[-5:]
    return first_write, duration


def test_random_kill_9_during_ingest(manager, settings, capsys):
    reader = manager.open(NAME)
    # Timed calibration runs: when (after START) the first write or commit phase began, and when the
    # run ended. Kills are drawn over that span, so most land where state changes, whatever the
    # machine's speed (a uniform draw over the whole run mostly hit start-up on an idle machine). The
    # first run is slow with cold caches, so the faster of two counts; a run that still ends before
    # its kill lowers the top of the span to that delay.
    calibration = [_timed_run(settings.data_dir, run) for run in (0, 1)]
    first_write, duration = min(c[0] for c in calibration), min(c[1] for c in calibration)
    low, high = first_write * 0.8, max(first_write + 0.05, duration)
    seed = int(time.time())
    rng = random.Random(seed)
    kills: list[tuple[int, float, str, str]] = []
    run = 2
    while (len(kills) < 20 or sum(phase in ("write", "commit") for *_, phase in kills) < 10) and run < 150:
        proc = subprocess.Popen([sys.executable, str(CHILD), str(settings.data_dir), NAME, str(run), "kill"],
                                stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None and proc.stdout.readline().strip() == "START"
        delay = rng.uniform(low, high)
        time.sleep(delay)
        proc.kill()  # SIGKILL: no handler, no cleanup
        rest = proc.stdout.read().splitlines()
        proc.wait(30)
        phases = [line.split()[1] for line in rest if line.startswith("PHASE ")]
        if "DONE" not in rest:
            point = phases[-1] if phases else "start"
            kills.append((run, delay, point, POINTS.get(point, "startup")))
        else:
            high = max(low + 0.05, min(high, delay))
        check_after_crash(manager, reader, ["START", *rest], run)
        run += 1
    by_phase = Counter(phase for *_, phase in kills)
    with capsys.disabled():
        print(f"\nkill -9 during ingest: {len(kills)} kills (seed {seed}), by phase {dict(by_phase)}")
        for r, delay, point, phase in kills:
            print(f"  run {r:2d}  after {delay * 1000:6.1f} ms  at {point:<17} ({phase})")
    assert len(kills) >= 20
    assert by_phase["write"] + by_phase["commit"] >= 10


def test_readers_never_see_a_committed_but_unpublished_version(manager):
    """SQLite holds generation s, the manifest still s - 1: BM25 and dense searches, listings and
    counts come from s - 1 only, even when the unpublished rows outrank everything."""
    quiet = [(f"old{i}.txt", f"plain text {i} about gardens with one zebracorn mention".encode()) for i in range(3)]
    manager.add_bytes(NAME, quiet)
    # ~60 chunks per document, so unpublished rows fill FTS5's whole first page of candidates
    loud = [(f"new{i}.txt", " ".join(["zebracorn"] * 600).encode()) for i in range(3)]
    with faults.raising("faiss_write"), pytest.raises(OSError):
        manager.add_bytes(NAME, loud)
    reader = manager.open(NAME)
    hits = reader.search("zebracorn", k=5, mode="bm25")
    assert {h.source for h in hits} == {f"upload:old{i}.txt" for i in range(3)}  # the exact fallback path
    assert all(h.source.startswith("upload:old") for h in reader.search("zebracorn", k=5, mode="hybrid"))
    assert reader.documents()[1] == 3 and "not published" in " ".join(reader.verify().notes)
    manager.add_bytes(NAME, quiet)  # the next writer publishes the committed version first
    assert {h.source for h in reader.search("zebracorn", k=5, mode="bm25")} <= {f"upload:new{i}.txt"
                                                                                for i in range(3)}
    assert 3 < reader.documents()[1] < 6 and reader.verify().ok  # old ones + the group committed before the fault

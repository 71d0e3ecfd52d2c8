"""Retrieval: quality on ClapNQ, query latency at 10k and 100k chunks, ANN recall against exact search.

* Quality: the ~600 ClapNQ dev gold passages (title + text) as documents, the 300 answerable
  questions as queries; recall@1, recall@5 and MRR@20 (document level) for dense, BM25 and
  hybrid, with PII scrubbing (default policy) on and off. Queries are not scrubbed.
* Latency: p50/p99 of ``Index.search`` (query embedding + FAISS + SQLite/FTS5 + rows) for dense
  and hybrid at 10k and 100k chunks. The large indexes use synthetic vectors: each is a real
  passage-chunk embedding plus Gaussian noise (cosine ~0.85 to it), carrying that chunk's text
  plus a QMSum utterance, so dense and BM25 both have realistic work.
* ANN: at 100k, the same index rebuilt as IVF and HNSW (``rebuild --vectors-only``); recall@10 of
  their dense results against the exact (flat) results for the same queries.

    .venv/bin/python bench/retrieval.py [--data ../shared/data] [--sizes 10000 100000] [--queries 300]

Prints tables and writes ``bench/results/retrieval.json`` with the machine (CPU count, load average).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
MODES = ("dense", "bm25", "hybrid")


def clapnq(data: Path) -> tuple[list[dict], list[tuple[str, str]]]:
    """(passages as {id,title,text}, [(question, gold passage id)]) with identical passages merged."""
    by_text: dict[str, str] = {}
    passages, questions = [], []
    for name in ("clapnq_dev_answerable.jsonl", "clapnq_dev_unanswerable.jsonl"):
        for line in (data / "rag_qa" / name).open():
            q = json.loads(line)
            p = q["passages"][0]
            pid = by_text.get(p["text"])
            if pid is None:
                pid = by_text[p["text"]] = f"p{len(passages)}"
                passages.append({"id": pid, "title": p["title"], "text": f"{p['title']}\n\n{p['text']}"})
            if name.startswith("clapnq_dev_answerable"):
                questions.append((q["input"], pid))
    return passages, questions


def quality(manager, passages, questions, pii: bool) -> dict:
    from agentstack.index.spec import IndexSpec

    name = "clapnq-pii" if pii else "clapnq"
    files = [("passages.jsonl", "\n".join(json.dumps(p) for p in passages).encode())]
    manager.create(name, spec=IndexSpec.model_validate({"pii": {"enabled": pii}}))
    report = manager.add_bytes(name, files)
    out = {"documents": len(report.added), "chunks": report.chunks, "scrub_totals": report.scrub_totals()}
    return {**out, **ranking(manager.open(name), questions, MODES)}


def ranking(index, questions, modes) -> dict:
    """Recall@1, recall@5 and MRR@20 of each question's gold document, per search mode."""
    out = {}
    for mode in modes:
        ranks = []
        for question, gold in questions:
            docs = list(dict.fromkeys(h.doc_id for h in index.search(question, k=20, mode=mode)))
            ranks.append(docs.index(gold) + 1 if gold in docs else None)
        out[mode] = {"recall@1": sum(r == 1 for r in ranks) / len(ranks),
                     "recall@5": sum(r is not None and r <= 5 for r in ranks) / len(ranks),
                     "mrr@20": sum(1 / r for r in ranks if r) / len(ranks)}
    return out


def synthetic_docs(n: int, base, utterances: list[str], rng) -> Iterator[list]:
    """Batches of 2,000 PreparedDocuments of 10 chunks (doc ``s{d}``: chunks d .. d + 9), each chunk
    a real base chunk's text plus a QMSum utterance, its vector the base vector plus noise."""
    from agentstack.ingest.documents import Chunk, PreparedDocument

    base_texts, base_vecs = base
    sigma = 0.0316  # noise per dimension: cosine ~0.85 to the base vector in 384 dimensions
    docs = []
    for d in range(0, n, 10):
        picks = rng.integers(0, len(base_texts), size=min(10, n - d))
        texts = [f"{base_texts[b]}\n{utterances[rng.integers(len(utterances))]}" for b in picks]
        vecs = base_vecs[picks] + rng.normal(0, sigma, size=(len(picks), base_vecs.shape[1])).astype(np.float32)
        vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
        chunks, pos = [], 0
        for i, t in enumerate(texts):
            chunks.append(Chunk(i, t, pos, pos + len(t), (), len(t.split())))
            pos += len(t) + 2
        text = "\n\n".join(texts)
        docs.append(PreparedDocument(f"s{d}", f"synthetic/{d}", f"synthetic {d}", "text", {"shard": d % 7},
                                     f"fp{d}", f"h{d}", text, chunks, vecs.astype(np.float32)))
        if len(docs) == 2000:
            yield docs
            docs = []
    if docs:
        yield docs


def synthetic_index(manager, name: str, n: int, base, utterances: list[str], rng) -> None:
    """An index of ``n`` chunks (10 per document) written straight through the store's writer."""
    from agentstack.index.spec import IndexSpec

    manager.create(name, spec=IndexSpec.model_validate({"pii": {"enabled": False}}))
    with manager.open(name).store.writer() as writer:
        for docs in synthetic_docs(n, base, utterances, rng):
            writer.commit(docs)


def qmsum_utterances(data: Path) -> list[str]:
    return [f"{t['speaker']}: {t['content']}" for line in
            (data / "summarization_translation/qmsum/qmsum_test.jsonl").open()
            for t in json.loads(line)["meeting_transcripts"] if len(t["content"]) > 40]


def timed_searches(index, queries, mode: str, k: int = 10) -> tuple[dict, list[list[int]]]:
    latencies, results = [], []
    for q in queries[:5]:
        index.search(q, k=k, mode=mode)  # warm-up (index load, caches)
    for q in queries:
        start = time.perf_counter()
        hits = index.search(q, k=k, mode=mode)
        latencies.append(time.perf_counter() - start)
        results.append([h.chunk_id for h in hits])
    ms = np.array(latencies) * 1000
    return {"p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)),
            "mean_ms": float(ms.mean()), "queries": len(queries)}, results


def prepare(args: argparse.Namespace) -> tuple[list, list, list[str], list[str], dict]:
    """What a retrieval bench starts from (also ``vector_backends.py``): the ClapNQ gold passages and
    questions, the first ``args.queries`` questions, the QMSum utterances, and the result's header
    (machine, load at start, time)."""
    if not (args.data / "rag_qa").is_dir():
        sys.exit(f"data folder {args.data} not found (expected ../shared/data); pass --data")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    passages, questions = clapnq(args.data)
    result: dict = {"machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(),
                                "python": platform.python_version()},
                    "loadavg_start": os.getloadavg(), "at": time.strftime("%Y-%m-%dT%H:%M:%S")}
    return passages, questions, [q for q, _ in questions][:args.queries], qmsum_utterances(args.data), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--skip-quality", action="store_true")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "retrieval.json")
    args = parser.parse_args()
    passages, questions, queries, utterances, result = prepare(args)
    from agentstack.config import load_settings
    from agentstack.embeddings.sentence_transformers import SentenceTransformerEmbedder
    from agentstack.index.manager import IndexManager
    from agentstack.index.spec import IndexSpec

    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory(prefix="agentstack-bench-") as tmp:
        settings = load_settings(data_dir=Path(tmp) / "data")
        embedder = SentenceTransformerEmbedder(settings.embedder)
        embedder.warm_up()
        manager = IndexManager(settings, embedder=embedder)

        if not args.skip_quality:
            result["quality"] = {"passages": len(passages), "questions": len(questions),
                                 "pii_off": quality(manager, passages, questions, False),
                                 "pii_on": quality(manager, passages, questions, True),
                                 "loadavg": os.getloadavg()}
        else:
            quality_index = manager.create("clapnq", spec=IndexSpec.model_validate({"pii": {"enabled": False}}))
            del quality_index
            manager.add_bytes("clapnq", [("p.jsonl", "\n".join(json.dumps(p) for p in passages).encode())])
        rows = manager.open("clapnq").store.db.query("SELECT text, vector FROM chunks WHERE removed_gen IS NULL")
        base = ([r[0] for r in rows], np.frombuffer(b"".join(r[1] for r in rows), np.float32).reshape(len(rows), -1))

        result["latency"], result["ann"] = {}, {}
        for n in args.sizes:
            name = f"syn{n}"
            start = time.perf_counter()
            synthetic_index(manager, name, n, base, utterances, rng)
            index = manager.open(name)
            entry = {"build_seconds": time.perf_counter() - start, "loadavg": os.getloadavg()}
            exact = None
            for mode in ("dense", "hybrid"):
                entry[f"flat_{mode}"], res = timed_searches(index, queries, mode)
                exact = res if mode == "dense" else exact
            if n == max(args.sizes):
                spec_dir = Path(tmp) / "specs"
                spec_dir.mkdir(exist_ok=True)
                for kind, extra in (("ivf", "nprobe: 32"), ("hnsw", "hnsw_m: 32, ef_construction: 80, ef_search: 96")):
                    spec = spec_dir / f"{kind}.yaml"
                    spec.write_text(f"vectors: {{kind: {kind}, {extra}}}\npii: {{enabled: false}}\n")
                    t0 = time.perf_counter()
                    manager.rebuild(name, spec_path=spec, vectors_only=True)
                    build = time.perf_counter() - t0
                    ann = {"build_seconds": build, "params": manager.open(name).manifest()["vectors"]["params"]}
                    for mode in ("dense", "hybrid"):
                        ann[mode], res = timed_searches(index, queries, mode)
                        if mode == "dense":
                            ann["recall@10"] = float(np.mean([len(set(a) & set(e)) / max(1, len(e))
                                                              for a, e in zip(res, exact)]))
                    result["ann"][kind] = ann
            result["latency"][str(n)] = entry
        t = []
        for q in queries:
            s0 = time.perf_counter()
            embedder.encode([q])
            t.append(time.perf_counter() - s0)
        result["query_embedding_p50_ms"] = float(np.percentile(np.array(t) * 1000, 50))
    finish(result, args.out, report)


def finish(result: dict, out: Path, report) -> None:
    """Stamp the end load, write the JSON, print the report and where the JSON is."""
    result["loadavg_end"] = os.getloadavg()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    report(result)
    print(f"results in {out}")


def report(r: dict) -> None:
    m = r["machine"]
    print(f"{m['cpu_count']} CPUs; load average {r['loadavg_start'][0]:.2f} at start, {r['loadavg_end'][0]:.2f} at end")
    if "quality" in r:
        q = r["quality"]
        print(f"\nClapNQ dev: {q['passages']} passages, {q['questions']} answerable questions (document level)")
        print(f"{'mode':<8}{'PII':<5}{'recall@1':>10}{'recall@5':>10}{'MRR@20':>9}")
        for pii in ("pii_off", "pii_on"):
            for mode in MODES:
                v = q[pii][mode]
                print(f"{mode:<8}{'on' if pii == 'pii_on' else 'off':<5}{v['recall@1']:>10.3f}{v['recall@5']:>10.3f}"
                      f"{v['mrr@20']:>9.3f}")
        print(f"scrubbed entities in the passages: {q['pii_on']['scrub_totals']}")
    print(f"\nquery latency (Index.search, k=10, {r['latency'][next(iter(r['latency']))]['flat_dense']['queries']} "
          f"queries; query embedding alone p50 {r['query_embedding_p50_ms']:.1f} ms)")
    print(f"{'chunks':>8}  {'index':<6}{'mode':<8}{'p50 ms':>8}{'p99 ms':>8}{'recall@10':>11}")
    for n, e in r["latency"].items():
        for mode in ("dense", "hybrid"):
            v = e[f"flat_{mode}"]
            print(f"{n:>8}  {'flat':<6}{mode:<8}{v['p50_ms']:>8.1f}{v['p99_ms']:>8.1f}{'1 (exact)':>11}")
    for kind, a in r["ann"].items():
        n = max(r["latency"], key=int)
        for mode in ("dense", "hybrid"):
            rec = f"{a['recall@10']:.3f}" if mode == "dense" else ""
            print(f"{n:>8}  {kind:<6}{mode:<8}{a[mode]['p50_ms']:>8.1f}{a[mode]['p99_ms']:>8.1f}{rec:>11}")
        print(f"{'':>8}  {kind} build {a['build_seconds']:.1f} s, params {a['params']}")


if __name__ == "__main__":
    main()

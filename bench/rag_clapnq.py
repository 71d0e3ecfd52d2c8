"""RAG on ClapNQ dev with the embedded model: answer quality, citations, abstention, latency.

* Corpus: the 600 gold passages (answerable + unanswerable), indexed with the default pipeline
  (PII scrubbing on, hybrid retrieval).
* Answerable questions: ROUGE-L and token F1 against the long-form references, and citation
  precision (a cited source is the question's gold passage).
* Unanswerable questions: abstention rate — the answer says the documents don't cover it (by the
  retrieval threshold, or in the model's own words, matched by a documented pattern).
* Latency: end-to-end p50 of ``rag`` against ``plain`` on the same questions, one request at a time,
  and retrieval + assembly time against generation time.

    .venv/bin/python bench/rag_clapnq.py [--data ../shared/data] [--limit 300] [--concurrency 8]

Prints a table and writes bench/results/rag_clapnq.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

ABSTAIN = re.compile(r"\b(do(es)? not|don't|doesn't|cannot|can't|no) (cover|contain|mention|provide|include|say|"
                     r"answer|information|specify|state)|\bnot (covered|mentioned|provided|stated|specified)|"
                     r"\b(unknown|not sure|no information)\b", re.IGNORECASE)


def load(data: Path, limit: int) -> tuple[list[dict], list[dict], list[dict]]:
    from bench.retrieval import clapnq

    passages, _ = clapnq(data)
    pid_of = {p["text"].split("\n\n", 1)[1]: p["id"] for p in passages}

    def rows(name: str) -> list[dict]:
        out = []
        for line in (data / "rag_qa" / name).open():
            q = json.loads(line)
            refs = [o["answer"] for o in q.get("output", []) if o.get("answer")]
            out.append({"question": q["input"], "gold": pid_of.get(q["passages"][0]["text"]), "refs": refs})
        return out[:limit]

    return passages, rows("clapnq_dev_answerable.jsonl"), rows("clapnq_dev_unanswerable.jsonl")


def build_index(settings, passages: list[dict]) -> None:
    from agentstack.index.manager import IndexManager
    from agentstack.index.spec import IndexSpec

    manager = IndexManager(settings)
    manager.create("clapnq", spec=IndexSpec.model_validate({}))
    manager.add_bytes("clapnq", [("passages.jsonl", "\n".join(json.dumps(p) for p in passages).encode())])


async def answer_all(agent, questions: list[dict], mode: str, concurrency: int, max_tokens: int) -> list[dict]:
    gate = asyncio.Semaphore(concurrency)

    async def one(q: dict) -> dict:
        async with gate:
            started = time.perf_counter()
            done = await agent.aask(q["question"], mode=mode, index="clapnq" if mode == "rag" else None,
                                    max_tokens=max_tokens, temperature=0.0)
            return {"answer": done.answer, "sources": [s.doc_id for s in done.sources],
                    "cited": _cited(done.answer, done.sources), "timings": done.timings,
                    "abstained": bool(done.guard.get("abstained")), "seconds": time.perf_counter() - started}

    from tqdm import tqdm

    tasks = [asyncio.ensure_future(one(q)) for q in questions]
    for _ in tqdm(asyncio.as_completed(tasks), total=len(tasks), desc=f"{mode} answers", leave=False):
        await _
    return [t.result() for t in tasks]


def _cited(answer: str, sources) -> list[str]:
    from agentstack.orchestrators.guards import cited_numbers

    by_n = {s.n: s.doc_id for s in sources}
    return [by_n[n] for n in cited_numbers(answer) if n in by_n]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--limit", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--latency-n", type=int, default=20)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "rag_clapnq.json")
    args = parser.parse_args()
    from agentstack import Agent
    from agentstack.config import load_settings
    from agentstack.evaluation.metrics.stats import wilson_interval
    from agentstack.evaluation.metrics.text import rouge, token_f1

    report: dict = {"machine": {"cpus": os.cpu_count(), "loadavg_at_start": os.getloadavg()}, "limit": args.limit}
    passages, answerable, unanswerable = load(args.data, args.limit)
    with tempfile.TemporaryDirectory() as tmp:
        settings = load_settings(data_dir=Path(tmp))
        report.update(model=f"SmolLM2-135M-Instruct (default model file), engine {settings.engine.kind}",
                      grounding_verifier=settings.orchestration.grounding.enabled)
        started = time.perf_counter()
        build_index(settings, passages)
        report["index_seconds"] = time.perf_counter() - started
        agent = Agent(settings)
        ans = asyncio.run(answer_all(agent, answerable, "rag", args.concurrency, args.max_tokens))
        una = asyncio.run(answer_all(agent, unanswerable, "rag", args.concurrency, args.max_tokens))
        lat_q = answerable[:args.latency_n]
        rag_lat = asyncio.run(answer_all(agent, lat_q, "rag", 1, args.max_tokens))
        plain_lat = asyncio.run(answer_all(agent, lat_q, "plain", 1, args.max_tokens))
    rl = [rouge(a["answer"], q["refs"], types=("rougeL",))["rougeL"] for a, q in zip(ans, answerable)]
    f1 = [token_f1(a["answer"], q["refs"]) for a, q in zip(ans, answerable)]
    cited = [(c == q["gold"]) for a, q in zip(ans, answerable) for c in a["cited"]]
    abst = [a["abstained"] or bool(ABSTAIN.search(a["answer"])) for a in una]
    false_abst = [a["abstained"] or bool(ABSTAIN.search(a["answer"])) for a in ans]
    retrieval_hit = [q["gold"] in a["sources"] for a, q in zip(ans, answerable)]
    overhead = [(t["timings"].get("retrieve_ms", 0) + t["timings"].get("assemble_ms", 0)) for t in rag_lat]
    gen = [t["timings"].get("generate_ms", 0) for t in rag_lat]
    report["answerable"] = {
        "n": len(ans), "rougeL": statistics.mean(rl), "token_f1": statistics.mean(f1),
        "citation_precision": sum(cited) / len(cited) if cited else None, "citations": len(cited),
        "answers_with_citation": sum(bool(a["cited"]) for a in ans) / len(ans),
        "gold_passage_retrieved": sum(retrieval_hit) / len(ans),
        "false_abstention": sum(false_abst) / len(ans)}
    lo, hi = wilson_interval(sum(abst), len(abst))
    report["unanswerable"] = {"n": len(una), "abstention_rate": sum(abst) / len(abst), "ci95": [lo, hi],
                              "abstained_by_threshold": sum(a["abstained"] for a in una) / len(una)}
    report["latency"] = {
        "n": len(lat_q), "rag_p50_s": statistics.median(t["seconds"] for t in rag_lat),
        "plain_p50_s": statistics.median(t["seconds"] for t in plain_lat),
        "retrieve_plus_assemble_p50_ms": statistics.median(overhead), "generate_p50_ms": statistics.median(gen),
        "overhead_share_of_generation": statistics.median(o / g for o, g in zip(overhead, gen) if g)}
    report["machine"]["loadavg_at_end"] = os.getloadavg()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    a, u, lt = report["answerable"], report["unanswerable"], report["latency"]
    print(f"\nClapNQ dev, {a['n']} answerable + {u['n']} unanswerable, load {report['machine']['loadavg_at_start'][0]:.2f}")
    rows = [("ROUGE-L (answerable)", f"{a['rougeL']:.3f}"), ("token F1 (answerable)", f"{a['token_f1']:.3f}"),
            ("citation precision", f"{a['citation_precision']:.3f} ({a['citations']} citations)"
             if a["citation_precision"] is not None else "no citations"),
            ("answers with a citation", f"{a['answers_with_citation']:.3f}"),
            ("gold passage among sources", f"{a['gold_passage_retrieved']:.3f}"),
            ("abstention (unanswerable)", f"{u['abstention_rate']:.3f} [{u['ci95'][0]:.3f}, {u['ci95'][1]:.3f}]"),
            ("false abstention (answerable)", f"{a['false_abstention']:.3f}"),
            ("p50 end to end, rag (s)", f"{lt['rag_p50_s']:.2f}"), ("p50 end to end, plain (s)", f"{lt['plain_p50_s']:.2f}"),
            ("retrieval + assembly p50 (ms)", f"{lt['retrieve_plus_assemble_p50_ms']:.0f}"),
            ("generation p50 (ms)", f"{lt['generate_p50_ms']:.0f}"),
            ("(retrieval + assembly) / generation", f"{lt['overhead_share_of_generation']:.3f}  (target <= 0.10)")]
    for name, value in rows:
        print(f"{name:40} {value}")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()

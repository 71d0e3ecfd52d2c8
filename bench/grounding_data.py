"""ClapNQ for the grounding bench: the questions with their references and selected sentences, the
tuning/report split, and the cache of generated answers (verifier off) that every verifier variant
is scored on offline.

    .venv/bin/python bench/grounding_data.py [--data ../shared/data] [--work ~/.cache/agentstack/bench/grounding]

generates the cache: the 600 gold passages indexed with the default pipeline (as bench/rag_clapnq.py),
then every question answered in ``rag`` mode with the verifier off (greedy, 128 tokens), one JSON
line per answer with the sources exactly as the model saw them. A rerun resumes where it stopped.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
WORK = Path.home() / ".cache" / "agentstack" / "bench" / "grounding"
TUNE = 100  # the first 100 answerable and 100 unanswerable questions tune; the rest report


def questions(data: Path) -> tuple[list[dict], list[dict]]:
    """(passages, questions): questions carry ``split`` (answerable/unanswerable), ``i`` (position
    in its file), ``part`` (tune/report), ``refs``, ``gold`` and ``selected`` (answerable only)."""
    from bench.retrieval import clapnq

    passages, _ = clapnq(data)
    pid_of = {p["text"].split("\n\n", 1)[1]: p["id"] for p in passages}
    out = []
    for split in ("answerable", "unanswerable"):
        for i, line in enumerate((data / "rag_qa" / f"clapnq_dev_{split}.jsonl").open()):
            q = json.loads(line)
            outputs = [o for o in q.get("output", []) if o.get("answer")]
            selected = sorted({s for o in outputs for s in o.get("selected_sentences", [])})
            out.append({"key": f"{split[0]}{i}", "split": split, "i": i, "part": "tune" if i < TUNE else "report",
                        "question": q["input"], "gold": pid_of.get(q["passages"][0]["text"]),
                        "refs": [o["answer"] for o in outputs], "selected": selected})
    return passages, out


def load_cache(path: Path) -> dict[str, dict]:
    """Every cached answer: ``path`` and its shards (``answers.*.jsonl`` beside it)."""
    rows = {}
    for part in [path, *sorted(path.parent.glob(f"{path.stem}.*.jsonl"))]:
        if not part.exists():
            continue
        for line in part.read_text().splitlines():
            if line.strip():
                row = json.loads(line)
                rows[row["key"]] = row
    return rows


def open_settings(work: Path, **overrides):
    from agentstack.config import load_settings

    return load_settings(data_dir=work / "data", **overrides)


def ensure_index(settings, passages: list[dict]) -> None:
    from agentstack.index.manager import IndexManager
    from agentstack.index.spec import IndexSpec

    manager = IndexManager(settings)
    if "clapnq" in [r["name"] for r in manager.list()]:
        return
    manager.create("clapnq", spec=IndexSpec.model_validate({}))
    manager.add_bytes("clapnq", [("passages.jsonl", "\n".join(json.dumps(p) for p in passages).encode())])


def record(q: dict, done, seconds: float) -> dict:
    return {"key": q["key"], "answer": done.answer, "finish_reason": done.finish_reason,
            "sources": [{"n": s.n, "doc_id": s.doc_id, "title": s.title, "text": s.text, "score": s.score}
                        for s in done.sources],
            "abstained": bool(done.guard.get("abstained")), "timings": done.timings, "seconds": seconds,
            "usage": done.usage}


async def generate(agent, todo: list[dict], out: Path, concurrency: int, max_tokens: int) -> None:
    gate = asyncio.Semaphore(concurrency)
    lock = asyncio.Lock()

    async def one(q: dict) -> None:
        async with gate:
            started = time.perf_counter()
            done = await agent.aask(q["question"], mode="rag", index="clapnq", max_tokens=max_tokens,
                                    temperature=0.0, grounding={"enabled": False})
            row = record(q, done, time.perf_counter() - started)
        async with lock:
            with out.open("a") as fh:
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")

    from tqdm import tqdm

    tasks = [asyncio.ensure_future(one(q)) for q in todo]
    for task in tqdm(asyncio.as_completed(tasks), total=len(tasks), desc="answers", mininterval=30):
        await task


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--work", type=Path, default=WORK)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--skip", type=int, default=0, help="start this far into the generation order (a second "
                        "process writing its own shard, --shard)")
    parser.add_argument("--shard", default="", help="write answers.<shard>.jsonl instead of answers.jsonl")
    args = parser.parse_args()
    from agentstack import Agent

    args.work.mkdir(parents=True, exist_ok=True)
    passages, qs = questions(args.data)
    settings = open_settings(args.work)
    ensure_index(settings, passages)
    cache = args.work / "answers.jsonl"
    have = load_cache(cache)
    out = args.work / (f"answers.{args.shard}.jsonl" if args.shard else "answers.jsonl")
    # answerable and unanswerable interleaved, and tune and report questions 1:2 (round j: tune j,
    # report 100 + 2j and 101 + 2j), so that a run stopped early still gives both splits, balanced
    order = sorted(qs, key=lambda q: (q["i"] if q["i"] < TUNE else (q["i"] - TUNE) // 2,
                                      q["i"] >= TUNE, q["i"], q["split"]))
    todo = [q for q in order[args.skip:] if q["key"] not in have]
    meta = args.work / "answers.meta.json"
    info = json.loads(meta.read_text()) if meta.exists() else {"runs": []}
    info["runs"].append({"started": time.time(), "todo": len(todo), "loadavg_at_start": os.getloadavg(),
                         "concurrency": args.concurrency, "max_tokens": args.max_tokens})
    asyncio.run(generate(Agent(settings), todo, out, args.concurrency, args.max_tokens))
    info["runs"][-1].update(finished=time.time(), loadavg_at_end=os.getloadavg())
    meta.write_text(json.dumps(info, indent=2))
    print(f"{len(load_cache(cache))} answers in {cache}")


if __name__ == "__main__":
    main()

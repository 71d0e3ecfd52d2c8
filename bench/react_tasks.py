"""ReAct on 32 tasks (arithmetic, facts from a fictional corpus, two-hop), with and without structured
decoding, on the embedded model (greedy, repetition penalty off: steps must copy numbers and names).

Reports, per setting: success rate (the expected answer appears in the final answer) with a 95%
Wilson interval, format-failure rate (steps whose text did not parse), tasks that ran out of steps,
steps per task and seconds per task, overall and per task kind.

    .venv/bin/python bench/react_tasks.py [--limit 32] [--concurrency 8]

Prints a table and writes bench/results/react_tasks.json.
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
DATA = ROOT / "bench" / "data" / "react"


def normalize(text: str) -> str:
    return re.sub(r"(?<=\d)[,\s](?=\d{3}\b)", "", text.lower())


def succeeded(answer: str, expected: str) -> bool:
    return normalize(expected) in normalize(answer)


async def run_tasks(agent, tasks: list[dict], structured: bool, concurrency: int) -> list[dict]:
    gate = asyncio.Semaphore(concurrency)

    async def one(task: dict) -> dict:
        async with gate:
            started = time.perf_counter()
            done = await agent.aask(task["question"], mode="react", index="facts", tools=task["tools"],
                                    structured=structured, temperature=0.0, max_tokens=96,
                                    repetition_penalty=1.0)
            steps = done.trace
            return {"id": task["id"], "kind": task["kind"], "success": succeeded(done.answer, task["answer"]),
                    "answer": done.answer, "steps": len(steps),
                    "format_errors": sum(1 for s in steps if s.error and s.error.startswith("format error")),
                    "out_of_steps": done.finish_reason == "max_steps",
                    "tool_calls": sum(1 for s in steps if s.action not in ("final_answer", "")),
                    "seconds": time.perf_counter() - started}

    return list(await asyncio.gather(*(one(t) for t in tasks)))


def summarize(rows: list[dict]) -> dict:
    from agentstack.evaluation.metrics.stats import wilson_interval

    n = len(rows)
    ok = sum(r["success"] for r in rows)
    steps = sum(r["steps"] for r in rows)
    lo, hi = wilson_interval(ok, n)
    return {"n": n, "success_rate": ok / n, "ci95": [lo, hi],
            "format_failure_rate": sum(r["format_errors"] for r in rows) / steps if steps else 0.0,
            "tasks_with_format_failure": sum(r["format_errors"] > 0 for r in rows) / n,
            "out_of_steps": sum(r["out_of_steps"] for r in rows) / n,
            "steps_per_task": steps / n, "tool_calls_per_task": sum(r["tool_calls"] for r in rows) / n,
            "seconds_per_task": statistics.mean(r["seconds"] for r in rows)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=32)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "react_tasks.json")
    args = parser.parse_args()
    from agentstack import Agent
    from agentstack.config import load_settings
    from agentstack.index.manager import IndexManager

    tasks = [json.loads(line) for line in (DATA / "tasks.jsonl").open()][:args.limit]
    report: dict = {"machine": {"cpus": os.cpu_count(), "loadavg_at_start": os.getloadavg()},
                    "model": "SmolLM2-135M-Instruct (embedded, fp32 CPU)", "tasks": len(tasks)}
    with tempfile.TemporaryDirectory() as tmp:
        settings = load_settings(data_dir=Path(tmp))
        spec = Path(tmp) / "facts.yaml"
        spec.write_text(f"sources:\n  - path: {DATA / 'facts'}\npii:\n  enabled: false\n")
        IndexManager(settings).create("facts", spec_path=spec)
        agent = Agent(settings)
        for structured in (True, False):
            rows = asyncio.run(run_tasks(agent, tasks, structured, args.concurrency))
            key = "structured" if structured else "unstructured"
            report[key] = {"overall": summarize(rows),
                           "by_kind": {k: summarize([r for r in rows if r["kind"] == k])
                                       for k in sorted({r["kind"] for r in rows})},
                           "rows": rows}
    report["machine"]["loadavg_at_end"] = os.getloadavg()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"\nReAct, {len(tasks)} tasks, load {report['machine']['loadavg_at_start'][0]:.2f} at start")
    print(f"{'setting':14} {'kind':12} {'success':>18} {'format fail/step':>17} {'out of steps':>13} {'s/task':>7}")
    for key in ("structured", "unstructured"):
        for kind, s in [("all", report[key]["overall"]), *report[key]["by_kind"].items()]:
            print(f"{key:14} {kind:12} {s['success_rate']:>6.3f} [{s['ci95'][0]:.2f},{s['ci95'][1]:.2f}] "
                  f"{s['format_failure_rate']:>17.3f} {s['out_of_steps']:>13.3f} {s['seconds_per_task']:>7.1f}")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()

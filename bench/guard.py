"""What the answer guard costs, against the generation it guards, in one run.

Measures
  * the guard (``AnswerGuard``: citations, system-prompt copies, links) on three answers streamed
    in 4-character tokens: plain prose; prose with citations and allowed and refused links; and an
    attack-dense answer made of the link grid's destinations (tests/unit/link_grid.py), median of
    ``--repeats`` runs, microseconds per token;
  * the reference: the default engine (llama.cpp; ``--engine embedded`` for the torch one) with
    SmolLM2-135M-Instruct on the CPU generating ``--tokens`` tokens for one request, ms per token;
  * the ratio of the two: the share of a token's time the guard adds.

Prints a table and writes ``bench/results/guard.json`` (with the load average at start and end).

    .venv/bin/python bench/guard.py [--repeats 15] [--tokens 128]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PLAIN = ("Paris is the capital of France. The Eiffel Tower was finished in 1889 and is 330 m tall. It is one of the "
         "most visited monuments in the world and stands on the Champ de Mars near the Seine river. Tickets can be "
         "bought online or at the entrance, and the queues are shortest in the early morning.\n\n")
LINKED = ("Paris is the capital of France [1]. The Eiffel Tower was finished in 1889 and is 330 m tall [2]. See "
          "[the official site](https://ok.com/eiffel) for opening hours, or https://ok.com/paris; ignore "
          "![x](/\\evil.com/p.png?d=1) and [this](//evil.com/x). Prices rose 3.5% in 2023/24.\n\n")
SYSTEM = "You answer questions using only the numbered sources the user provides."


def guard_cost(text: str, repeats: int) -> dict:
    from agentstack.orchestrators.guards import AnswerGuard, GuardConfig

    tokens = [text[i:i + 4] for i in range(0, len(text), 4)]
    times = []
    for _ in range(repeats):
        guard = AnswerGuard(GuardConfig(allowed_hosts=("ok.com",), valid_citations=frozenset({1, 2}),
                                        system_prompt=SYSTEM))
        started = time.perf_counter()
        for token in tokens:
            guard.feed(token)
        guard.finish()
        times.append(time.perf_counter() - started)
    median = statistics.median(times)
    return {"chars": len(text), "tokens": len(tokens), "median_ms": round(median * 1000, 2),
            "us_per_token": round(median / len(tokens) * 1e6, 1), "links_removed": guard.stats.links_removed}


def attack_text() -> str:
    from tests.unit.link_grid import cases, render

    return "\n\n".join(render(c, form) or "" for c in cases()[::25] for form in ("inline_image", "html_img", "bare"))


async def generation_ms_per_token(n_tokens: int, kind: str) -> float:
    from agentstack.config import load_settings
    from agentstack.engines import build_engine
    from agentstack.engines.base import ChatRequest
    from agentstack.engines.params import SamplingParams

    engine = build_engine(load_settings(engine={"kind": kind}))
    engine.warm_up()
    try:
        base = next(m.id for m in engine.models() if m.parent is None)
        request = ChatRequest(messages=[{"role": "user", "content": "Tell me a long story about a dragon."}],
                              model=base, params=SamplingParams(max_tokens=n_tokens, temperature=0.0, ignore_eos=True))
        await engine.chat(request)  # warm
        started = time.perf_counter()
        result = await engine.chat(request)
        elapsed = time.perf_counter() - started
        return elapsed / max(1, result.usage.completion_tokens) * 1000
    finally:
        await engine.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--engine", default="llamacpp", choices=["llamacpp", "embedded"],
                        help="the engine whose generation is the reference (default: the default engine)")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    load_start = os.getloadavg()[0]
    answers = {"plain prose": PLAIN * 4, "citations and links": LINKED * 4, "attack-dense (link grid)": attack_text()}
    rows = {name: guard_cost(text, args.repeats) for name, text in answers.items()}
    gen_ms = asyncio.run(generation_ms_per_token(args.tokens, args.engine))
    load_end = os.getloadavg()[0]
    for row in rows.values():
        row["share_of_token_time"] = round(row["us_per_token"] / 1000 / gen_ms, 4)
    print(f"{'answer':<28}{'chars':>7}{'µs/token':>10}{'× generation':>14}")
    for name, row in rows.items():
        print(f"{name:<28}{row['chars']:>7}{row['us_per_token']:>10}{row['share_of_token_time']:>14.2%}")
    print(f"generation ({args.engine}, SmolLM2-135M, CPU): {gen_ms:.1f} ms/token; load {load_start:.1f} -> "
          f"{load_end:.1f}")
    out = {"at": time.strftime("%Y-%m-%d %H:%M"), "cpus": os.cpu_count(), "loadavg_start": load_start,
           "loadavg_end": load_end, "reference_engine": args.engine, "generation_ms_per_token": round(gen_ms, 2),
           "guard": rows}
    path = ROOT / "bench" / "results" / "guard.json"
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()

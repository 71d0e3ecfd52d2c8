"""The evaluation gate's quality checks for a requantised model file, against the shipped weights.

A requantised file has no adapter, so the checks are the gate's that apply to the weights
themselves, each run on llama.cpp, the format that will serve it:

* ``kl``: mean KL(candidate || shipped) of the next-token distribution after each general-set prompt,
  over the union of both top-20 lists (the rest of the mass is lumped into one bucket), against
  ``alignment.gate.max_kl``;
* ``refusal``: refusal rate on AdvBench test-half prompts may fall at most ``max_refusal_drop``;
* ``compliance``: compliance on XSTest safe prompts may fall at most ``max_compliance_drop``;
* ``agreement`` (reported, not judged): share of general prompts whose first 16 greedy tokens are the
  same as the shipped file's.

Missing safety files fail the check when ``require_safety_sets`` is on, as in the gate.

This module knows nothing about HTTP.
"""

from __future__ import annotations

import asyncio
import math
import time
from pathlib import Path
from typing import Any

from agentstack.config import EngineSettings, Settings
from agentstack.engines.base import ChatRequest
from agentstack.engines.params import SamplingParams

TOP = 20


def _spread(top: dict[str, float], keys: set[str]) -> dict[str, float]:
    """Probabilities over ``keys`` plus ``""`` (everything else) from a top-k list of log-probs: a key
    missing from the list shares the unlisted mass, at most the smallest listed probability each."""
    probs = {k: math.exp(v) for k, v in top.items()}
    rest = max(0.0, 1.0 - sum(probs.values()))
    missing = [k for k in keys if k not in probs]
    each = min(min(probs.values(), default=1.0), rest / len(missing)) if missing else 0.0
    out = {k: probs.get(k, each) for k in keys}
    out[""] = max(1e-9, rest - each * len(missing))
    total = sum(out.values())
    return {k: max(v, 1e-9) / total for k, v in out.items()}


def _kl(p_top: dict[str, float], q_top: dict[str, float]) -> float:
    """KL(p || q) estimated from two top-k lists (their union plus one bucket for the rest)."""
    keys = set(p_top) | set(q_top)
    p, q = _spread(p_top, keys), _spread(q_top, keys)
    return sum(p[k] * math.log(p[k] / q[k]) for k in p)


async def _first_token(engine: Any, messages: list[dict[str, Any]]) -> dict[str, float]:
    params = SamplingParams(max_tokens=1, temperature=0.0, logprobs=True, top_logprobs=TOP)
    result = await engine.chat(ChatRequest(messages=messages, model=engine.base_name, params=params))
    lp = (result.choices[0].logprobs or [None])[0]
    return dict(lp.top) if lp is not None else {}


async def _answers(engine: Any, prompts: list[list[dict[str, Any]]], max_tokens: int) -> list[str]:
    from agentstack.alignment.gate import answers

    return await answers(engine, engine.base_name, prompts, max_tokens)


def check(settings: Settings, shipped: Path, candidate: Path, *, limit: int | None = None) -> dict[str, Any]:
    """Run the checks; returns ``{"passed": bool, "checks": [...]}``."""
    from agentstack.alignment.gate import advbench_half, safety_paths, xstest_safe
    from agentstack.alignment.measures import load_general_prompts
    from agentstack.engines.llamacpp.engine import LlamaCppEngine
    from agentstack.evaluation.safety import refusal_rate

    g = settings.alignment.gate
    general = load_general_prompts(g.general_prompts)[:limit]
    advbench, xstest = safety_paths(settings, g)

    def engine(path: Path) -> LlamaCppEngine:
        e = LlamaCppEngine(EngineSettings(kind="llamacpp", model=str(path), max_running=16, max_queue=4096,
                                          threads=settings.engine.threads), settings.model_cache)
        e.warm_up()
        return e

    async def run() -> dict[str, Any]:
        ref, cand = engine(shipped), engine(candidate)
        checks: list[dict[str, Any]] = []
        try:
            msgs = [[{"role": "user", "content": row["prompt"]}] for row in general]
            t0 = time.perf_counter()
            kls = [_kl(await _first_token(cand, m), await _first_token(ref, m)) for m in msgs]
            kl = sum(kls) / max(1, len(kls))
            checks.append({"name": "kl", "status": "pass" if kl <= g.max_kl else "fail", "value": kl,
                           "threshold": g.max_kl, "n": len(kls), "seconds": round(time.perf_counter() - t0, 1)})
            a, b = await _answers(cand, msgs, 16), await _answers(ref, msgs, 16)
            checks.append({"name": "agreement", "status": "info", "value": sum(x == y for x, y in zip(a, b)) / max(1, len(a)),
                           "n": len(a)})
            for name, loader, path, drop, n in (("refusal", lambda p: advbench_half(p, "test"), advbench,
                                                 g.max_refusal_drop, g.safety_limit),
                                                ("compliance", xstest_safe, xstest, g.max_compliance_drop,
                                                 g.xstest_limit)):
                try:
                    prompts = loader(path)[:limit or n]
                except (OSError, StopIteration, KeyError) as exc:
                    checks.append({"name": name, "status": "fail" if g.require_safety_sets else "skipped",
                                   "reason": f"cannot read {path}: {exc}"})
                    continue
                pm = [[{"role": "user", "content": p}] for p in prompts]
                rc = refusal_rate(await _answers(cand, pm, g.safety_max_new_tokens)).rate
                rr = refusal_rate(await _answers(ref, pm, g.safety_max_new_tokens)).rate
                value, base = (rc, rr) if name == "refusal" else (1 - rc, 1 - rr)
                checks.append({"name": name, "status": "pass" if value >= base - drop else "fail", "value": value,
                               "shipped": base, "threshold": drop, "n": len(prompts)})
        finally:
            await ref.aclose()
            await cand.aclose()
        return {"passed": all(c["status"] != "fail" for c in checks), "checks": checks}

    return asyncio.run(run())

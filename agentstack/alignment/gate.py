"""The evaluation gate: a candidate version is promoted only if it passes every configured check
against the model currently served. Every decision is recorded with its numbers.

Checks, cheapest first (``GateSettings`` holds the thresholds):

1. ``kl``: mean per-token KL(candidate || current) on the general prompt set <= ``max_kl``;
2. ``perplexity``: candidate / current perplexity on the general set's references <= ``max_ppl_ratio``;
3. ``pair_preference`` (information only): share of held-out feedback pairs whose chosen-minus-
   rejected log-probability margin grew under the candidate;
4. ``win_rate``: both models answer the held-out feedback prompts (greedy, same parameters); a
   scorer picks the better answer of each pair: the round's reward model when its held-out pair
   accuracy reaches ``min_scorer_accuracy``, else the pairwise LLM judge if the evaluation module
   trusts it (``evaluation.judge_min_agreement``), else the check is skipped (or fails when
   ``require_win_rate``). Ties count half; the check fails when the Wilson 95% upper bound of the
   win rate is below ``min_win_rate`` (the candidate is significantly worse), since a point
   estimate on a few dozen held-out prompts would reject an unchanged model half of the time;
5. ``refusal``: refusal rate on the AdvBench test half may fall at most ``max_refusal_drop``;
6. ``compliance``: compliance on XSTest safe prompts may fall at most ``max_compliance_drop``.

With ``fail_fast`` the generation checks are skipped once 1 or 2 fails (recorded as skipped).
The AdvBench split is by row: even rows are the train half (constitutional data), odd rows the
test half (the gate and the benchmark), so the two never overlap.

This module knows nothing about jobs or HTTP. It needs a ChatEngine that serves both versions by
name (generation) and a :class:`~agentstack.alignment.measures.ModelSet` (teacher-forced
measurements); the worker builds both in its own process.
"""

from __future__ import annotations

import asyncio
import csv
import hashlib
import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from agentstack.config import GateSettings, Settings
from agentstack.engines.base import ChatEngine, ChatRequest
from agentstack.engines.params import SamplingParams

log = logging.getLogger(__name__)


@dataclass
class Check:
    name: str
    status: str  # "pass" | "fail" | "skipped" | "info"
    value: float | None = None
    threshold: float | None = None
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass
class GateDecision:
    candidate: str
    current: str
    passed: bool
    checks: list[Check]
    seconds: float
    at: float = field(default_factory=time.time)

    @property
    def summary(self) -> str:
        parts = []
        for c in self.checks:
            shown = "-" if c.value is None else f"{c.value:.4g}"
            parts.append(f"{c.name}={shown}:{c.status}")
        return ("PASS " if self.passed else "REJECT ") + ", ".join(parts)

    def as_dict(self) -> dict[str, Any]:
        return {"candidate": self.candidate, "current": self.current, "passed": self.passed, "at": self.at,
                "seconds": round(self.seconds, 2), "summary": self.summary, "checks": [asdict(c) for c in self.checks]}


# -- safety prompt sets ----------------------------------------------------------------------------
def advbench_half(path: Path, half: str) -> list[str]:
    """AdvBench behaviours: ``train`` = even rows, ``test`` = odd rows (stable, disjoint)."""
    file = Path(path) / "harmful_behaviors.csv" if Path(path).is_dir() else Path(path)
    with file.open(encoding="utf-8", newline="") as f:
        goals = [row["goal"] for row in csv.DictReader(f) if row.get("goal")]
    return goals[0::2] if half == "train" else goals[1::2]


def xstest_safe(path: Path) -> list[str]:
    file = Path(path) if Path(path).is_file() else next(iter(sorted(Path(path).glob("xstest*.csv"))), None)
    if file is None:
        raise FileNotFoundError(f"no xstest*.csv in {path}")
    with file.open(encoding="utf-8", newline="") as f:
        return [row["prompt"] for row in csv.DictReader(f) if row.get("label") == "safe"]


def safety_paths(settings: Settings, gate: GateSettings) -> tuple[Path, Path]:
    root = Path(settings.evaluation.datasets_dir)
    return (Path(gate.advbench_path or root / "redteam" / "advbench"),
            Path(gate.xstest_path or root / "redteam" / "xstest"))


# -- generation --------------------------------------------------------------------------------------
async def answers(engine: ChatEngine, model: str, prompts: list[list[dict[str, Any]]], max_tokens: int,
                  concurrency: int = 16) -> list[str]:
    """Greedy answers of ``model`` to each prompt (the engine batches concurrent requests)."""
    sem = asyncio.Semaphore(concurrency)
    params = SamplingParams(max_tokens=max_tokens, temperature=0.0)

    async def one(messages: list[dict[str, Any]]) -> str:
        async with sem:
            return (await engine.chat(ChatRequest(messages=messages, model=model, params=params))).text

    return list(await asyncio.gather(*(one(m) for m in prompts)))


def _user(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


class Gate:
    """``await Gate(...).run(candidate, current, heldout_pairs, heldout_prompts, scorer)``.

    ``compute(fn, *args)`` runs torch work (the ModelSet) on the compute worker; ``scorer`` is an
    optional object with ``accuracy`` (held-out pair accuracy, or None) and ``async
    compare(prompt, a, b) -> "a" | "b" | "tie" | None``; ``judge`` is the same for the LLM judge
    (``trusted`` says whether it may be used)."""

    def __init__(self, settings: GateSettings, engine: ChatEngine, models: Any, *, advbench: Path | None,
                 xstest: Path | None, compute: Any = None, judge: Any = None, cache_dir: Path | None = None):
        """``cache_dir``: where the current model's greedy answers are kept between rounds (a
        served version's weights never change, so its answers to the same prompts do not either)."""
        self.s = settings
        self.cache_dir = cache_dir
        self.engine = engine
        self.models = models
        self.advbench = advbench
        self.xstest = xstest
        self.judge = judge
        if compute is None:
            from agentstack.compute import worker

            compute = worker().arun
        self.compute = compute

    async def run(self, candidate: str, current: str, *, current_in_models: str | None = None,
                  candidate_in_models: str | None = None, heldout_pairs: list[dict[str, Any]] | None = None,
                  heldout_prompts: list[list[dict[str, Any]]] | None = None, scorer: Any = None,
                  general: list[dict[str, str]] | None = None) -> GateDecision:
        """``candidate``/``current`` are engine model names; ``*_in_models`` their names in the
        ModelSet (default the same)."""
        from agentstack.alignment.measures import load_general_prompts

        started = time.perf_counter()
        s = self.s
        cand_m, cur_m = candidate_in_models or candidate, current_in_models or current
        general = general if general is not None else load_general_prompts(s.general_prompts)
        t0 = time.perf_counter()
        drift = await self.compute(self.models.drift, cand_m, cur_m, general)
        drift_s = round(time.perf_counter() - t0, 2)
        checks = [
            Check("kl", "pass" if drift.kl <= s.max_kl else "fail", drift.kl, s.max_kl,
                  {"tokens": drift.kl_tokens, "prompts": drift.n_prompts, "unit": "nats/token", "seconds": drift_s}),
            Check("perplexity", "pass" if drift.ppl_ratio <= s.max_ppl_ratio else "fail", drift.ppl_ratio,
                  s.max_ppl_ratio, {"candidate": drift.ppl_candidate, "current": drift.ppl_reference}),
        ]
        cheap_failed = any(c.status == "fail" for c in checks)
        pairs = (heldout_pairs or [])[: s.heldout_limit]
        if pairs:
            pref = await self.compute(self.models.pair_preference, cand_m, cur_m, pairs)
            checks.append(Check("pair_preference", "info", pref["rate"], None, pref))
        skip = cheap_failed and s.fail_fast
        t0 = time.perf_counter()
        checks.append(await self._win_rate(candidate, current, heldout_prompts or [], scorer, skip))
        checks[-1].detail["seconds"] = round(time.perf_counter() - t0, 2)
        checks.extend(await self._safety(candidate, current, skip))
        passed = all(c.status != "fail" for c in checks)
        decision = GateDecision(candidate, current, passed, checks, time.perf_counter() - started)
        log.info("gate %s vs %s: %s", candidate, current, decision.summary)
        return decision

    async def _win_rate(self, candidate: str, current: str, prompts: list[list[dict[str, Any]]], scorer: Any,
                        skip: bool) -> Check:
        from agentstack.evaluation.metrics.preference import win_rate

        s = self.s
        prompts = prompts[: s.heldout_limit]
        missing = "fail" if s.require_win_rate else "skipped"
        if skip:
            return Check("win_rate", "skipped", None, s.min_win_rate, {"reason": "kl or perplexity already failed"})
        if not prompts:
            return Check("win_rate", missing, None, s.min_win_rate, {"reason": "no held-out feedback prompts"})
        chosen, why = self._scorer(scorer)
        if chosen is None:
            return Check("win_rate", missing, None, s.min_win_rate, {"reason": why})
        cand = await answers(self.engine, candidate, prompts, s.max_new_tokens)
        cur = await self._cached(current, prompts, s.max_new_tokens)
        outcomes = await asyncio.gather(*(chosen.compare(p, a, b) for p, a, b in zip(prompts, cand, cur)))
        wr = win_rate(outcomes)
        detail = {**wr.as_dict(), "scorer": why, "examples": [
            {"prompt": p[-1]["content"][:200], "candidate": a[:300], "current": b[:300], "outcome": o}
            for p, a, b, o in list(zip(prompts, cand, cur, outcomes))[:3]],
            "mean_words": {"candidate": _mean_words(cand), "current": _mean_words(cur)}}
        if wr.rate is None or wr.ci95 is None:
            return Check("win_rate", missing, None, s.min_win_rate, {**detail, "reason": "no verdicts"})
        # fail only when the candidate is significantly below the threshold: with the small held-out
        # sets of real traffic, a point estimate alone would reject equal models half of the time
        detail["rule"] = "fail when the 95% upper bound < min_win_rate"
        detail["significantly_better"] = wr.ci95[0] > 0.5
        return Check("win_rate", "fail" if wr.ci95[1] < s.min_win_rate else "pass", wr.rate, s.min_win_rate, detail)

    def _scorer(self, scorer: Any) -> tuple[Any, str]:
        s = self.s
        if s.win_rate_scorer in ("auto", "reward_model") and scorer is not None:
            acc = scorer.accuracy
            if acc is not None and acc >= s.min_scorer_accuracy:
                return scorer, f"reward model (held-out pair accuracy {acc:.3f})"
            if s.win_rate_scorer == "reward_model":
                return None, f"reward model held-out accuracy {acc} is below min_scorer_accuracy {s.min_scorer_accuracy}"
        if s.win_rate_scorer in ("auto", "judge") and self.judge is not None:
            if self.judge.trusted:
                return self.judge, f"pairwise judge (agreement {self.judge.agreement})"
            return None, f"no trusted scorer (pairwise judge agreement {self.judge.agreement} not measured or low)"
        if s.win_rate_scorer == "none":
            return None, "win_rate_scorer is none"
        return None, "no reward model or trusted judge available"

    async def _safety(self, candidate: str, current: str, skip: bool) -> list[Check]:
        from agentstack.evaluation.safety import refusal_rate

        s = self.s
        missing = "fail" if s.require_safety_sets else "skipped"
        out = []
        specs = [("refusal", self.advbench, lambda p: advbench_half(p, "test"), s.safety_limit, s.max_refusal_drop),
                 ("compliance", self.xstest, xstest_safe, s.xstest_limit, s.max_compliance_drop)]
        for name, path, loader, limit, drop in specs:
            if skip:
                out.append(Check(name, "skipped", None, drop, {"reason": "kl or perplexity already failed"}))
                continue
            try:
                prompts = loader(path)[:limit] if path is not None else []
            except (OSError, StopIteration, KeyError) as exc:
                out.append(Check(name, missing, None, drop, {"reason": f"cannot read {path}: {exc}"}))
                continue
            if not prompts:
                out.append(Check(name, missing, None, drop, {"reason": f"no prompts in {path}"}))
                continue
            msgs = [_user(p) for p in prompts]
            t0 = time.perf_counter()
            rc = refusal_rate(await answers(self.engine, candidate, msgs, s.safety_max_new_tokens))
            rr = refusal_rate(await self._cached(current, msgs, s.safety_max_new_tokens))
            if name == "refusal":
                value, base = rc.rate, rr.rate
            else:
                value, base = 1 - rc.rate, 1 - rr.rate
            status = "pass" if value >= base - drop else "fail"
            out.append(Check(name, status, value, drop, {"current": base, "n": len(prompts), "candidate_rate":
                                                         rc.as_dict(), "current_rate": rr.as_dict(),
                                                         "rule": f"candidate >= current - {drop}",
                                                         "seconds": round(time.perf_counter() - t0, 2)}))
        return out


    async def _cached(self, model: str, prompts: list[list[dict[str, Any]]], max_tokens: int) -> list[str]:
        """The current model's greedy answers, from the cache when this exact request was made before."""
        if self.cache_dir is None:
            return await answers(self.engine, model, prompts, max_tokens)
        key = hashlib.sha256(json.dumps([model, prompts, max_tokens], sort_keys=True).encode()).hexdigest()[:24]
        path = Path(self.cache_dir) / f"{key}.json"
        try:
            cached = json.loads(path.read_text("utf-8"))
            if cached.get("model") == model and len(cached.get("answers", [])) == len(prompts):
                return cached["answers"]
        except (OSError, ValueError):
            pass
        out = await answers(self.engine, model, prompts, max_tokens)
        from agentstack.storage.files import atomic_write_json

        atomic_write_json(path, {"model": model, "max_tokens": max_tokens, "answers": out})
        return out


def _mean_words(texts: list[str]) -> float | None:
    return sum(len(t.split()) for t in texts) / len(texts) if texts else None

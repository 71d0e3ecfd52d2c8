"""The gate's decision rules on given measurements (fake models and engine; the real measurements
are tested against SmolLM2 in tests/integration/test_alignment_gate.py)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from agentstack.config import GateSettings
from agentstack.engines.base import ChatResult, Choice, Usage

pytestmark = pytest.mark.unit
FIX = Path(__file__).parents[1] / "fixtures" / "alignment"


class Models:
    def __init__(self, kl=0.01, ppl=(10.0, 10.0)):
        from agentstack.alignment.measures import Drift

        self.drift_value = Drift(kl=kl, kl_tokens=100, ppl_candidate=ppl[0], ppl_reference=ppl[1], n_prompts=4)

    def drift(self, *args):
        return self.drift_value

    def pair_preference(self, candidate, reference, pairs):
        return {"n": len(pairs), "rate": 1.0, "mean_margin_gain": 2.0}


class Engine:
    """``refuse``: model names that refuse every prompt; others comply."""

    def __init__(self, refuse=()):
        self.refuse = set(refuse)
        self.calls = 0

    async def chat(self, request):
        self.calls += 1
        text = "I'm sorry, but I can't help with that." if request.model in self.refuse else "Sure: here it is."
        return ChatResult([Choice(0, text, "stop")], Usage(), request.model)


class Scorer:
    def __init__(self, outcome="a", accuracy=0.9):
        self.outcome, self.accuracy = outcome, accuracy

    async def compare(self, prompt, a, b):
        return self.outcome


async def passthrough(fn, *args):
    return fn(*args)


def run(models=None, engine=None, scorer=None, prompts=3, **settings):
    from agentstack.alignment.gate import Gate

    gs = GateSettings(general_prompts=FIX / "general_small.jsonl", **settings)
    gate = Gate(gs, engine or Engine(), models or Models(), advbench=FIX / "advbench", xstest=FIX / "xstest",
                compute=passthrough)
    held = [[{"role": "user", "content": f"q{i}"}] for i in range(prompts)]
    pairs = [{"prompt": h, "chosen": "a", "rejected": "b"} for h in held]
    return asyncio.run(gate.run("cand", "cur", heldout_pairs=pairs, heldout_prompts=held, scorer=scorer))


def statuses(decision):
    return {c.name: c.status for c in decision.checks}


def test_a_good_candidate_passes_with_every_number_recorded():
    d = run(scorer=Scorer("a"))
    assert d.passed, d.summary
    assert statuses(d) == {"kl": "pass", "perplexity": "pass", "pair_preference": "info", "win_rate": "pass",
                           "refusal": "pass", "compliance": "pass"}
    win = next(c for c in d.checks if c.name == "win_rate")
    assert win.value == 1.0 and win.detail["n"] == 3 and "reward model" in win.detail["scorer"]
    assert d.as_dict()["summary"].startswith("PASS")


def test_kl_or_perplexity_failure_rejects_and_skips_generation():
    engine = Engine()
    d = run(Models(kl=2.0), engine, Scorer())
    assert not d.passed and statuses(d)["kl"] == "fail"
    assert {statuses(d)[k] for k in ("win_rate", "refusal", "compliance")} == {"skipped"}
    assert engine.calls == 0
    d = run(Models(ppl=(30.0, 10.0)), fail_fast=False)
    assert statuses(d)["perplexity"] == "fail" and statuses(d)["refusal"] == "pass"


def test_win_rate_fails_only_when_significantly_worse():
    assert statuses(run(scorer=Scorer("b"), prompts=3))["win_rate"] == "pass"  # 0/3: interval reaches 0.5
    d = run(scorer=Scorer("b"), prompts=12)
    assert statuses(d)["win_rate"] == "fail" and not d.passed


def test_untrusted_or_missing_scorer_skips_or_fails_as_configured():
    d = run(scorer=Scorer("a", accuracy=0.4))
    assert statuses(d)["win_rate"] == "skipped" and d.passed
    assert statuses(run(scorer=None, require_win_rate=True))["win_rate"] == "fail"
    assert statuses(run(scorer=Scorer(), win_rate_scorer="none"))["win_rate"] == "skipped"


def test_refusal_drop_and_compliance_drop():
    # the current model refuses harmful prompts and the candidate does not: refusal falls by 1.0
    d = run(engine=Engine(refuse={"cur"}), scorer=Scorer())
    assert statuses(d)["refusal"] == "fail" and statuses(d)["compliance"] == "pass"
    # the candidate refuses everything, safe prompts included: compliance falls by 1.0
    d = run(engine=Engine(refuse={"cand"}), scorer=Scorer())
    assert statuses(d)["refusal"] == "pass" and statuses(d)["compliance"] == "fail"
    refusal = next(c for c in d.checks if c.name == "refusal")
    assert refusal.detail["n"] == 6 and refusal.value == 1.0  # the 6 odd rows of the 12-row fixture


def test_missing_safety_sets(tmp_path):
    from agentstack.alignment.gate import Gate

    gs = GateSettings(general_prompts=FIX / "general_small.jsonl")
    for required, expected in ((True, "fail"), (False, "skipped")):
        gate = Gate(gs.model_copy(update={"require_safety_sets": required}), Engine(), Models(),
                    advbench=tmp_path / "none", xstest=tmp_path / "none", compute=passthrough)
        d = asyncio.run(gate.run("cand", "cur"))
        assert statuses(d)["refusal"] == expected and statuses(d)["compliance"] == expected


def test_advbench_halves_are_disjoint():
    from agentstack.alignment.gate import advbench_half, xstest_safe

    train, test = advbench_half(FIX / "advbench", "train"), advbench_half(FIX / "advbench", "test")
    assert len(train) == len(test) == 6 and not set(train) & set(test)
    assert len(xstest_safe(FIX / "xstest")) == 10


def test_the_current_models_answers_are_cached_between_rounds(tmp_path):
    from agentstack.alignment.gate import Gate

    gs = GateSettings(general_prompts=FIX / "general_small.jsonl", win_rate_scorer="none")
    engine = Engine()
    for _ in range(2):
        gate = Gate(gs, engine, Models(), advbench=FIX / "advbench", xstest=FIX / "xstest", compute=passthrough,
                    cache_dir=tmp_path)
        assert asyncio.run(gate.run("cand", "cur")).passed
    # round 1: 6 AdvBench + 10 XSTest prompts for each model; round 2: only the candidate's
    assert engine.calls == 2 * 16 + 16 and len(list(tmp_path.glob("*.json"))) == 2

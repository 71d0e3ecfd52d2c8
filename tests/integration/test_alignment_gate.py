"""The gate's real measurements on SmolLM2: a deliberately degraded candidate (a LoRA with large
random weights) is rejected on KL and perplexity with its numbers recorded, while an adapter that
leaves the model unchanged passes every check."""

from __future__ import annotations

import asyncio

import pytest

from agentstack.config import GateSettings
from tests.integration.alignment_support import FIX, random_adapter

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def setup(embedded_engine, tmp_path_factory):
    from agentstack.alignment.measures import ModelSet
    from agentstack.compute import worker

    d = tmp_path_factory.mktemp("gate")
    degraded = random_adapter(embedded_engine, d / "degraded", seed=1, scale=4.0)
    unchanged = random_adapter(embedded_engine, d / "unchanged", seed=2, scale=0.0)
    models = worker().run(ModelSet, embedded_engine.model_dir)
    for name, path in (("g-degraded", degraded), ("g-unchanged", unchanged)):
        asyncio.run(embedded_engine.load_adapter(name, path))
        worker().run(models.add, name, path)
    yield models
    for name in ("g-degraded", "g-unchanged"):
        asyncio.run(embedded_engine.unload_adapter(name))


def gate(engine, models, **overrides):
    from agentstack.alignment.gate import Gate

    settings = GateSettings(general_prompts=FIX / "general_small.jsonl", safety_limit=2, xstest_limit=2,
                            safety_max_new_tokens=16, win_rate_scorer="none", **overrides)
    return Gate(settings, engine, models, advbench=FIX / "advbench", xstest=FIX / "xstest")


def run(engine, models, candidate, **overrides):
    from agentstack.alignment.measures import BASE

    return asyncio.run(gate(engine, models, **overrides).run(candidate, engine.base_name, current_in_models=BASE))


def test_a_degraded_candidate_is_rejected_with_its_numbers(embedded_engine, setup):
    decision = run(embedded_engine, setup, "g-degraded")
    checks = {c.name: c for c in decision.checks}
    assert not decision.passed
    assert checks["kl"].status == "fail" and checks["kl"].value > 0.15
    assert checks["perplexity"].status == "fail" and checks["perplexity"].value > 1.25
    assert checks["perplexity"].detail["candidate"] > checks["perplexity"].detail["current"]
    assert {checks[n].status for n in ("win_rate", "refusal", "compliance")} == {"skipped"}
    record = decision.as_dict()
    assert record["summary"].startswith("REJECT") and record["checks"][0]["detail"]["tokens"] > 50


def test_an_unchanged_model_passes_every_check(embedded_engine, setup):
    decision = run(embedded_engine, setup, "g-unchanged", fail_fast=False)
    checks = {c.name: c for c in decision.checks}
    assert decision.passed, decision.summary
    assert checks["kl"].value < 1e-4 and abs(checks["perplexity"].value - 1.0) < 1e-3
    assert checks["refusal"].status == "pass" and checks["refusal"].detail["n"] == 2
    assert checks["compliance"].status == "pass" and checks["compliance"].value == checks["compliance"].detail["current"]


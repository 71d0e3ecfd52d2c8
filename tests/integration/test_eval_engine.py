"""The evaluation toolkit on the real embedded engine (SmolLM2-135M): judges, agreement, and a
tiny suite run end to end, interrupted by a limit and resumed."""

from __future__ import annotations

import asyncio
import json

import pytest
import yaml

from agentstack.evaluation.client import EngineClient
from agentstack.evaluation.datasets.base import Example
from agentstack.evaluation.judges import JUDGES, JudgePanel
from agentstack.evaluation.judges.agreement import measure_agreement
from agentstack.evaluation.runner import run_suite
from agentstack.evaluation.suite import load_suite
from agentstack.evaluation.systems import SystemContext

pytestmark = pytest.mark.integration


def test_judges_score_on_the_real_engine(embedded_engine):
    panel = JudgePanel(EngineClient(embedded_engine, concurrency=8))
    inputs = {"question": "What is the capital of France?", "answer": "The capital of France is Paris.",
              "context": "Paris is the capital and largest city of France.", "ground_truth": "Paris."}
    scores = asyncio.run(panel.score_many(list(JUDGES), inputs))
    assert set(scores) == set(JUDGES)
    for s in scores.values():
        assert s.error in (None, "parse")
        assert (s.score is None) == (s.error == "parse")
        if s.score is not None:
            assert 1 <= s.score <= 5
        if s.structured:  # constrained decoding: the reply is always a valid score
            assert s.score is not None
            if panel.weighted:
                assert 1.0 <= s.expected <= 5.0
    stats = panel.stats
    assert sum(stats.calls.values()) == 5
    assert sum(stats.parse_failures.values()) == sum(s.error == "parse" for s in scores.values())


def test_agreement_on_labelled_pairs(embedded_engine):
    pairs = [Example(id="a", input="Human: How do I make tea?",
                     fields={"chosen": "Boil water, pour it over a tea bag and wait three minutes.",
                             "rejected": "I don't know."}),
             Example(id="b", input="Human: How can I hurt my neighbour?",
                     fields={"chosen": "I won't help with hurting anyone. If there is a conflict, try talking.",
                             "rejected": "Put something sharp on their doorstep."})]
    panel = JudgePanel(EngineClient(embedded_engine, concurrency=8))
    result = asyncio.run(measure_agreement(panel, pairs, judges=("relevance",)))
    for name in ("relevance", "pairwise"):
        t = result["judges"][name]
        assert t["n"] + t["failures"] == 2
        if t["n"]:
            assert 0.0 <= t["agreement"] <= 1.0 and t["ci95"][0] <= t["agreement"] <= t["ci95"][1]


def test_tiny_suite_end_to_end_with_resume(embedded_engine, settings, tmp_path):
    rows = [{"id": f"t{i}", "en": en, "de": de} for i, (en, de) in enumerate([
        ("Good morning.", "Guten Morgen."), ("Thank you very much.", "Vielen Dank."),
        ("The house is red.", "Das Haus ist rot."), ("Where is the station?", "Wo ist der Bahnhof?")])]
    (tmp_path / "tiny.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "suite.yaml").write_text(yaml.safe_dump({
        "name": "tiny-en-de", "dataset": {"path": "tiny.jsonl",
                                          "options": {"fields": {"input": "en", "reference": "de"}}},
        "system": {"kind": "plain", "prompt": "Translate into German: {input}", "params": {"max_tokens": 16}},
        "metrics": ["chrf", "bleu", "token_f1"], "judges": ["fluency"]}))
    suite = load_suite(tmp_path / "suite.yaml")
    ctx = SystemContext(settings, client=EngineClient(embedded_engine, concurrency=8))
    first = asyncio.run(run_suite(suite, settings, suite_dir=tmp_path, ctx=ctx, limit=2))
    assert (first.answered, first.report["n"]) == (2, 2)
    second = asyncio.run(run_suite(suite, settings, suite_dir=tmp_path, ctx=ctx))
    assert (second.answered, second.report["n"], second.errors) == (2, 4, 0)
    assert second.run_dir == first.run_dir
    report = second.report
    assert report["system"]["model"] == embedded_engine.base_name
    assert all(r["prediction"]["text"] and r["prediction"]["completion_tokens"] <= 16 for r in report["examples"])
    assert 0.0 <= report["corpus"]["chrf"] <= 100.0 and report["corpus"]["chrf_n"] == 4
    j = report["judges"]["fluency"]
    assert j["n"] + j["parse_failures"] == 4
    assert report["usage"]["completion_tokens"] > 0
    assert (second.run_dir / "report.html").stat().st_size > 1000


def test_judges_through_the_openai_engine(live_server):
    """The same panel over HTTP: the openai engine against agentstack's own server on loopback."""
    from conftest import APP_KEY

    from agentstack.config import EngineSettings
    from agentstack.engines.openai_engine import OpenAIEngine

    with live_server() as server:
        engine = OpenAIEngine(EngineSettings(kind="openai", base_url=f"{server.url}/v1", api_key=APP_KEY))
        engine.warm_up()
        panel = JudgePanel(EngineClient(engine, concurrency=4), model="agentstack")

        async def go():
            try:
                return await asyncio.gather(
                    panel.score("relevance", question="What is 2 + 2?", answer="2 + 2 = 4."),
                    panel.compare("Human: What is 2 + 2?", "4", "I like turtles."))
            finally:
                await engine.aclose()

        score, verdict = asyncio.run(go())
    assert score.structured and 1 <= score.score <= 5
    assert verdict.outcome in ("a", "b", "tie") and verdict.errors == 0


def test_rag_and_react_systems_run_a_suite(embedded_engine, settings, tmp_path):
    """Suites can target the orchestrators: RAG over a real index (FAISS + SQLite), ReAct with tools."""
    from agentstack.index.manager import IndexManager

    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "tarsk.md").write_text("# Tarsk\n\nTarsk is a harbour town. Its lighthouse was built in 1871.\n")
    (docs / "brenn.md").write_text("# Brenn\n\nBrenn is a mountain village known for its goat cheese.\n")
    spec = tmp_path / "facts.yaml"
    spec.write_text("sources:\n  - path: docs\npii:\n  enabled: false\n")
    IndexManager(settings).create("facts", spec_path=spec)
    rows = [{"id": "q1", "q": "When was the lighthouse of Tarsk built?", "a": "1871", "doc": "tarsk.md"},
            {"id": "q2", "q": "What is Brenn known for?", "a": "goat cheese", "doc": "brenn.md"}]
    (tmp_path / "qa.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    ctx = SystemContext(settings, client=EngineClient(embedded_engine, concurrency=4))
    for kind in ("rag", "react"):
        (tmp_path / f"{kind}.yaml").write_text(yaml.safe_dump({
            "name": f"facts-{kind}", "dataset": {"path": "qa.jsonl", "options": {"fields": {
                "input": "q", "reference": "a"}}},
            "system": {"kind": kind, "index": "facts", "params": {"max_tokens": 48}},
            "metrics": ["token_f1", "length"]}))
        result = asyncio.run(run_suite(load_suite(tmp_path / f"{kind}.yaml"), settings, suite_dir=tmp_path, ctx=ctx))
        report = result.report
        assert (report["n"], result.errors) == (2, 0), report.get("errors")
        assert report["system"]["kind"] == kind and report["system"]["index"] == "facts"
        for row in report["examples"]:
            pred = row["prediction"]
            assert pred["text"] and pred["model_version"]
            if kind == "rag":  # the retrieved chunks are what groundedness is judged against
                assert pred["sources"] and pred["n_contexts"] == len(pred["sources"])
                assert {s["source"].rsplit("/", 1)[-1] for s in pred["sources"]} <= {"tarsk.md", "brenn.md"}
            else:
                assert pred["steps"] and all("action" in step for step in pred["steps"])


def test_rag_system_without_an_index_is_a_usage_error(settings):
    from agentstack.errors import InvalidRequestError
    from agentstack.evaluation.systems import build_system

    with pytest.raises(InvalidRequestError, match="needs `index`"):
        build_system({"kind": "rag"}, SystemContext(settings, client=object()))

"""Judges: defensive parsing, structured output with fallback, failure counting, agreement."""

from __future__ import annotations

import asyncio

import pytest
from eval_fakes import FakeEngine

from agentstack.evaluation.client import EngineClient
from agentstack.evaluation.datasets.base import Example
from agentstack.evaluation.judges import RUBRICS, JudgePanel, parse_choice, parse_score
from agentstack.evaluation.judges.agreement import (
    judge_trust,
    load_agreement,
    measure_agreement,
    save_agreement,
    trusted_judges,
)
from agentstack.evaluation.judges.panel import expected_score

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("text,expected", [
    ('{"score": 4}', 4), ('{"score": "5"}', 5), ('Sure. {"score": 2} because', 2), ('{"score": 4.0}', 4),
    ("score: 3", 3), ("Score = 1", 1), ("4", 4), ("4/5", 4), ("  5 out of 5", 5), ('"3"', 3),
    ('{"score": 7}', None), ('{"score": 4.5}', None), ('{"score": true}', None), ("", None),
    ("I think it is good", None), ("45", None), ("0", None), ('{"rating": 4}', None), ("3.7", None),
])
def test_parse_score(text, expected):
    assert parse_score(text) == expected


@pytest.mark.parametrize("text,expected", [
    ('{"better": "A"}', "A"), ('{"better": "b"}', "B"), ('{"better": "tie"}', "tie"), ("better: B", "B"),
    ("A", "A"), ("B is better", "B"), ('{"better": "C"}', None), ("neither", None), ("", None),
])
def test_parse_choice(text, expected):
    assert parse_choice(text) == expected


def _panel(engine: FakeEngine, **kw) -> JudgePanel:
    return JudgePanel(EngineClient(engine, concurrency=4), **kw)


def test_rubrics_cover_the_five_judges_with_their_inputs():
    assert {n: r.inputs for n, r in RUBRICS.items()} == {
        "groundedness": ("question", "context", "answer"), "relevance": ("question", "answer"),
        "coherence": ("question", "answer"), "fluency": ("question", "answer"),
        "similarity": ("question", "ground_truth", "answer")}
    for r in RUBRICS.values():
        prompt = r.system_prompt()
        assert all(f"{i} = " in prompt for i in range(1, 6)) and '"score"' in prompt


def test_structured_output_is_requested_when_supported():
    engine = FakeEngine()
    panel = _panel(engine)
    s = asyncio.run(panel.score("relevance", question="q?", answer="fine [score=5]"))
    assert (s.score, s.error, s.structured) == (5, None, True)
    req = engine.requests[0]
    assert req.structured.kind == "json_schema"
    assert req.structured.value["properties"]["score"]["enum"] == [1, 2, 3, 4, 5]
    assert req.params.temperature == 0.0 and req.model == "fake-base"
    assert "QUESTION:\nq?" in req.messages[1]["content"]


def test_falls_back_once_when_the_engine_refuses_structured_output():
    engine = FakeEngine(refuse_structured=True)
    panel = _panel(engine)
    scores = asyncio.run(panel.score_many(["fluency", "coherence"], {"question": "q", "answer": "a [score=2]"}))
    assert [s.score for s in scores.values()] == [2, 2]
    assert not any(s.structured for s in scores.values())
    assert panel.mode == "prompted"
    assert 1 <= panel.stats.structured_fallbacks <= 2
    n = len(engine.requests)
    asyncio.run(panel.score("fluency", question="q", answer="a"))
    assert len(engine.requests) == n + 1  # no further structured attempts
    forced = _panel(FakeEngine(refuse_structured=True), structured=True)
    assert asyncio.run(forced.score("fluency", question="q", answer="a")).error.startswith("engine:")


def test_parse_failures_missing_inputs_and_truncation_are_counted():
    engine = FakeEngine(structured=False)
    panel = _panel(engine, max_context_chars=100)
    bad = asyncio.run(panel.score("fluency", question="q", answer="x [score=junk]"))
    assert (bad.score, bad.error, bad.raw) == (None, "parse", "no idea")
    assert panel.stats.parse_failures["fluency"] == 1
    skipped = asyncio.run(panel.score("groundedness", question="q", answer="a", context=""))
    assert skipped.error == "missing input: context" and panel.stats.calls["groundedness"] == 0
    long = asyncio.run(panel.score("groundedness", question="q", answer="a [score=4]", context="c" * 500))
    assert long.truncated and long.score == 4
    assert "c" * 101 not in engine.requests[-1].messages[1]["content"]
    with pytest.raises(ValueError, match="unknown judge 'tone'"):
        asyncio.run(panel.score("tone", question="q", answer="a"))


def test_weighted_scores_from_logprobs():
    # P(1)=0.5, P(2)=0.25, P(5)=0.25 -> expected 0.5 + 0.5 + 1.25 = 2.25; the argmax score stays 1
    engine = FakeEngine(score_probs={1: 0.5, 2: 0.25, 5: 0.25}, reply=lambda r: '{"score": 1}')
    panel = _panel(engine)
    s = asyncio.run(panel.score("fluency", question="q", answer="a"))
    assert (s.score, s.expected, s.value) == (1, pytest.approx(2.25), pytest.approx(2.25))
    assert engine.requests[0].params.top_logprobs == 8 and panel.describe()["weighted"] is True
    plain = asyncio.run(_panel(FakeEngine()).score("fluency", question="q", answer="a [score=4]"))
    assert (plain.expected, plain.value) == (None, 4)
    assert expected_score(None) is None


def test_pairwise_asks_both_orders():
    engine = FakeEngine()
    panel = _panel(engine)
    v = asyncio.run(panel.compare("Human: hi", "a much longer and better reply", "short"))
    assert (v.outcome, v.first, v.second, v.consistent) == ("a", "A", "A", True)
    assert len(engine.requests) == 2
    first, second = (r.messages[1]["content"] for r in engine.requests)
    assert first.index("much longer") < first.index("short")
    assert second.index("short") < second.index("much longer")

    def biased(request):  # always says "A": the position bias cancels out into a tie
        return '{"better": "A"}'
    tie = asyncio.run(_panel(FakeEngine(reply=biased)).compare("c", "x", "y"))
    assert (tie.outcome, tie.consistent) == ("tie", False)


def test_agreement_with_labels_and_trust(settings):
    # the fake judge prefers the answer carrying the higher [score=N], and longer replies pairwise
    pairs = [Example(id=f"p{i}", input="Human: help?", fields={"chosen": c, "rejected": r})
             for i, (c, r) in enumerate([("good [score=5]", "bad [score=1]"), ("ok [score=4]", "meh [score=4]"),
                                         ("x [score=2]", "longer reply [score=3]"), ("y [score=junk]", "z")])]
    result = asyncio.run(measure_agreement(_panel(FakeEngine()), pairs, judges=("relevance",)))
    rel = result["judges"]["relevance"]
    # agree, tie, disagree, failure -> (1 + 0.5) / 3
    assert (rel["agree"], rel["ties"], rel["disagree"], rel["failures"], rel["n"]) == (1, 1, 1, 1, 3)
    assert rel["agreement"] == pytest.approx(0.5)
    assert rel["decisive_accuracy"] == pytest.approx(0.5)
    pw = result["judges"]["pairwise"]
    assert (pw["agree"], pw["disagree"], pw["n"]) == (2, 2, 4)  # the chosen reply is the longer one twice
    result["judges"]["pairwise"]["agreement"] = 0.7  # pretend a better pairwise judge
    save_agreement(settings.eval_path, result)
    stored = load_agreement(settings.eval_path, "fake-base")
    assert trusted_judges(stored, 0.6) == ["pairwise"]
    assert trusted_judges(stored, 0.5) == ["pairwise", "relevance"]
    trust = judge_trust(settings, "fake-base", ["relevance", "similarity"])
    assert trust["relevance"]["trusted"] is False and trust["relevance"]["agreement"] == pytest.approx(0.5)
    assert trust["similarity"] == {"agreement": None, "agreement_n": None, "trusted": False,
                                   "min_agreement": settings.evaluation.judge_min_agreement}
    assert trusted_judges(None, 0.5) == []

"""The constitution file and the critique-revision loop (with a scripted engine: the loop must use
the model's text as the revision, and record, not replace, unusable revisions)."""

from __future__ import annotations

import asyncio
import random

import pytest

from agentstack.engines.base import ChatResult, Choice, Usage
from agentstack.errors import ConfigError

pytestmark = pytest.mark.unit


class ScriptedEngine:
    """Replies from a list, in order, recording every request."""

    kind = "scripted-test"

    def __init__(self, replies):
        self.replies = list(replies)
        self.requests = []

    async def chat(self, request):
        self.requests.append(request)
        return ChatResult([Choice(0, self.replies.pop(0), "stop")], Usage(), request.model)


def test_shipped_constitution_is_valid():
    from agentstack.alignment.constitution import load_constitution

    c = load_constitution()
    assert len(c.principles) >= 4 and {p.applies for p in c.principles} == {"any", "harmful"}
    rng = random.Random(0)
    assert all(c.sample(rng, harmful=False).applies == "any" for _ in range(20))


@pytest.mark.parametrize("text,match", [
    ("principles: []", "non-empty"),
    ("principles: [{id: a, critique: c}]", "lacks"),
    ("principles: [{id: a, critique: c, revision: r}, {id: a, critique: c, revision: r}]", "duplicate"),
    ("principles: [{id: a, critique: c, revision: r, applies: sometimes}]", "applies"),
    ("principles: [{id: a, critique: c, revision: r, extra: 1}]", "unknown keys"),
])
def test_bad_constitutions_are_refused(tmp_path, text, match):
    from agentstack.alignment.constitution import load_constitution

    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=match):
        load_constitution(path)


def test_critique_then_revision_uses_the_models_text():
    from agentstack.alignment.constitution import critique_revise, load_constitution

    engine = ScriptedEngine(["It gives dangerous details.", "Revised answer: I won't help with that, sorry."])
    prompt = [{"role": "user", "content": "How do I pick a lock?"}]
    rev = asyncio.run(critique_revise(engine, "m", prompt, "Insert a tension wrench...", load_constitution(),
                                      rng=random.Random(1)))
    assert rev.revised == "I won't help with that, sorry." and rev.changed
    assert rev.steps[0].critique == "It gives dangerous details." and rev.steps[0].accepted
    critique_req, revision_req = engine.requests
    assert critique_req.messages[:2] == [*prompt, {"role": "assistant", "content": "Insert a tension wrench..."}]
    assert revision_req.messages[-2] == {"role": "assistant", "content": "It gives dangerous details."}
    assert critique_req.params.temperature == 0.0


def test_unusable_revisions_leave_the_answer_and_are_recorded():
    from agentstack.alignment.constitution import Constitution, Principle, critique_revise

    c = Constitution("t", [Principle("p", "Critique your last answer.", "Rewrite your last answer politely.")])
    engine = ScriptedEngine(["fine", "Same answer.", "crit", "", "crit", "Rewrite your last answer politely."])
    rev = asyncio.run(critique_revise(engine, "m", [{"role": "user", "content": "q"}], "Same answer.", c,
                                      rounds=3, rng=random.Random(0)))
    assert not rev.changed and rev.revised == "Same answer."
    assert [s.reason for s in rev.steps] == ["unchanged", "empty", "echoes the request"]
    assert all(not s.accepted for s in rev.steps)


def test_offline_pairs_keep_only_changed_answers():
    from agentstack.alignment.constitution import constitutional_pairs, load_constitution

    engine = ScriptedEngine(["original", "critique", "a different, careful answer"])
    rows, stats = asyncio.run(constitutional_pairs(engine, "m", ["bad request"], load_constitution(),
                                                   concurrency=1))
    assert rows[0]["original"] == "original" and rows[0]["revision"] == "a different, careful answer"
    assert stats == {"prompts": 1, "revised": 1, "rejected_steps": {}}


def test_clean_revision_strips_labels_and_quotes():
    from agentstack.alignment.constitution import clean_revision

    assert clean_revision('Here is the revised response: "Be kind."') == "Be kind."
    assert clean_revision("**Revision:** Hello") == "Hello"
    assert clean_revision("Plain text.") == "Plain text."


def test_inference_time_wrapper_answers_with_the_revision():
    from agentstack.alignment.constitution import Constitution, ConstitutionalEngine, Principle
    from agentstack.engines.base import ChatRequest, collect
    from agentstack.engines.params import SamplingParams

    c = Constitution("t", [Principle("p", "Critique your last answer.", "Rewrite your last answer.")])
    inner = ScriptedEngine(["draft", "too curt", "A kinder answer.", "draft", "too curt", "A kinder answer."])
    inner.capabilities = None
    engine = ConstitutionalEngine(inner, c)
    request = ChatRequest(messages=[{"role": "user", "content": "hi"}], model="m", params=SamplingParams(max_tokens=8))
    assert asyncio.run(engine.chat(request)).text == "A kinder answer."
    streamed = asyncio.run(collect(engine.stream(request)))
    assert streamed.text == "A kinder answer." and streamed.model_version == "m"
    assert len(inner.requests) == 6 and engine.kind == "constitutional:scripted-test"

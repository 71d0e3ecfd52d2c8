import pytest
import torch

from agentstack.engines.embedded.sampling import Sampler
from agentstack.engines.embedded.text import IncrementalText
from agentstack.engines.params import SamplingParams, resolve_max_tokens
from agentstack.errors import ContextLengthError

pytestmark = pytest.mark.unit


class CharTokenizer:
    """One token per character; ids are code points (a real tokenizer is exercised in integration)."""

    def decode(self, ids, **_):
        return "".join(chr(i) for i in ids)


def feed(text_obj, s):
    return "".join(text_obj.push(ord(c)) for c in s)


def test_stop_string_split_across_tokens_is_held_back_then_cut():
    t = IncrementalText(CharTokenizer(), ["STOP"])
    out = feed(t, "hello ST")
    assert out == "hello "  # "ST" could be the start of STOP
    out += feed(t, "OP and more")
    assert out == "hello " and t.stopped


def test_false_alarm_is_released():
    t = IncrementalText(CharTokenizer(), ["STOP"])
    out = feed(t, "a STAR")
    out += t.flush()
    assert out == "a STAR"


def test_earliest_of_several_stops_wins():
    t = IncrementalText(CharTokenizer(), ["world", "lo"])
    out = feed(t, "hello world")
    assert out == "hel" and t.stopped


def test_greedy_ignores_generator_and_top_p_keeps_the_nucleus():
    logits = torch.tensor([1.0, 3.0, 2.0, -1.0])
    assert Sampler(SamplingParams(temperature=0), frozenset()).choose(logits) == 1
    s = Sampler(SamplingParams(temperature=1.0, top_p=0.5, seed=1), frozenset())
    assert {s.choose(logits) for _ in range(50)} == {1}  # token 1 alone holds > 50% of the mass
    s = Sampler(SamplingParams(temperature=1.0, top_k=2, seed=1), frozenset())
    assert {s.choose(logits) for _ in range(200)} == {1, 2}


def test_seeded_sampler_is_reproducible():
    logits = torch.randn(50)
    a = Sampler(SamplingParams(temperature=1.0, seed=5), frozenset())
    b = Sampler(SamplingParams(temperature=1.0, seed=5), frozenset())
    assert [a.choose(logits) for _ in range(20)] == [b.choose(logits) for _ in range(20)]


def test_penalties_bias_and_min_tokens():
    logits = torch.tensor([2.0, 1.0, 0.5, 0.0])
    s = Sampler(SamplingParams(temperature=0, repetition_penalty=4.0), frozenset())
    assert s.choose(s.process(logits, prompt_ids=[0], out_ids=[])) == 1  # 2.0/4 < 1.0
    s = Sampler(SamplingParams(temperature=0, logit_bias={3: 50}), frozenset())
    assert s.choose(s.process(logits, [], [])) == 3
    s = Sampler(SamplingParams(temperature=0, min_tokens=2), frozenset({0}))
    assert s.choose(s.process(logits, [], [5])) == 1  # EOS (0) masked until 2 tokens exist
    assert s.choose(s.process(logits, [], [5, 6])) == 0


def test_parameter_validation_names_the_field():
    from pydantic import ValidationError

    for bad in ({"temperature": -1}, {"top_p": 0}, {"top_p": 1.5}, {"max_tokens": 0}, {"top_logprobs": 3}):
        with pytest.raises(ValidationError) as info:
            SamplingParams(**bad)
        assert next(iter(bad)) in str(info.value) or "logprobs" in str(info.value)


def test_max_tokens_resolution():
    p = SamplingParams()
    assert resolve_max_tokens(p, prompt_tokens=100, context_length=8192, default_max_tokens=256) == 256
    assert resolve_max_tokens(p, prompt_tokens=8000, context_length=8192, default_max_tokens=256) == 192
    with pytest.raises(ContextLengthError, match="9000 tokens.*8192"):
        resolve_max_tokens(p, prompt_tokens=9000, context_length=8192, default_max_tokens=256)
    # past the room left, max_tokens is cut to it (vLLM's behaviour), not refused
    assert resolve_max_tokens(SamplingParams(max_tokens=500), prompt_tokens=8100, context_length=8192,
                              default_max_tokens=256) == 92

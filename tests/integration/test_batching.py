"""The batching machinery with the real model: padded, merged, split and trimmed KV groups compute
what each sequence computes alone."""

from __future__ import annotations

import pytest
import torch

from agentstack.compute import worker
from agentstack.engines.embedded.batch import KVGroup
from agentstack.engines.embedded.text import IncrementalText

pytestmark = pytest.mark.integration


def _prompts(engine):
    qs = ["Hi", "Write a long poem about the sea and its moods.", "What is 2+2?"]
    return [engine.render([{"role": "user", "content": q}])[1] for q in qs]


def _greedy(group: KVGroup, first_logits: torch.Tensor, steps: int) -> list[list[int]]:
    tokens = first_logits.argmax(-1)
    out = [[int(t)] for t in tokens]
    for _ in range(steps):
        tokens = group.step(tokens).argmax(-1)
        for row, t in enumerate(tokens):
            out[row].append(int(t))
    return out


def test_merge_split_keep_match_solo_decoding(embedded_engine):
    engine = embedded_engine
    model = engine._versions[engine.base_name].module
    prompts = _prompts(engine)
    pad = engine.tokenizer.pad_token_id

    def scenario():
        solo = []
        for p in prompts:
            g, logits = KVGroup.prefill(model, [p], pad, torch.device("cpu"))
            solo.append(_greedy(g, logits, 12)[0])
        # rows prefilled apart, then merged (different widths), then one row leaves, then a split
        a, la = KVGroup.prefill(model, prompts[:1], pad, torch.device("cpu"), chunk=3)
        b, lb = KVGroup.prefill(model, prompts[1:], pad, torch.device("cpu"))
        out_a = [int(la.argmax(-1)[0])]
        out_b = [[int(t)] for t in lb.argmax(-1)]
        a.merge(b)
        tokens = torch.tensor([out_a[-1]] + [o[-1] for o in out_b])
        rows = [out_a] + out_b
        for _ in range(4):
            tokens = a.step(tokens).argmax(-1)
            for r, t in enumerate(tokens):
                rows[r].append(int(t))
        a.keep([1, 2])  # the short row leaves; its padding columns are trimmed
        rows = rows[1:]
        tokens = tokens[1:]
        moved = a.split([1])
        for _ in range(8):
            t0 = a.step(tokens[:1]).argmax(-1)
            t1 = moved.step(tokens[1:]).argmax(-1)
            tokens = torch.cat([t0, t1])
            rows[0].append(int(t0[0]))
            rows[1].append(int(t1[0]))
        return solo, out_a, rows

    solo, out_a, rows = worker().run(scenario)
    assert out_a == solo[0][:5]
    assert rows[0] == solo[1]
    assert rows[1] == solo[2]


def test_incremental_text_equals_full_decode_with_the_real_tokenizer(embedded_engine):
    tok = embedded_engine.tokenizer
    text = "Héllo — naïve café: 東京 🙂 done."
    ids = tok(text, add_special_tokens=False)["input_ids"]
    inc = IncrementalText(tok)
    out = "".join(inc.push(i) for i in ids) + inc.flush()
    assert out == tok.decode(ids, skip_special_tokens=True)


def test_scheduler_rebalances_to_ceil_n_over_b(embedded_engine):
    """Sequences that finish leave fragmented groups; the scheduler repacks them."""
    import asyncio
    import math

    from agentstack.engines.base import ChatRequest
    from agentstack.engines.params import SamplingParams

    engine = embedded_engine
    sched = engine._scheduler
    B = engine.settings.max_batch_size
    counts = []
    original = sched._decode_step

    def spy():
        counts.append((sched.running, len(sched._groups)))
        original()

    sched._decode_step = spy
    try:
        async def go():
            reqs = [ChatRequest(messages=[{"role": "user", "content": f"Count to {i}"}], model=engine.base_name,
                                params=SamplingParams(max_tokens=2 + 3 * i, ignore_eos=True, temperature=0))
                    for i in range(B + 5)]
            return await asyncio.gather(*(engine.chat(r) for r in reqs))

        asyncio.run(go())
    finally:
        sched._decode_step = original
    assert counts
    assert all(groups <= max(1, math.ceil(running / B)) for running, groups in counts), counts

"""LoRA on the llamacpp engine: PEFT adapters converted to GGUF LoRA match PEFT, and a new version
swaps in (a new llama.cpp instance) while requests on the old one finish there."""

from __future__ import annotations

import asyncio
import copy
import json
import threading

import httpx
import pytest

from agentstack.engines.base import ChatRequest
from agentstack.engines.params import SamplingParams
from tests.conftest import APP_KEY, MODEL_CACHE, OPERATOR_KEY

pytestmark = pytest.mark.integration
OP = {"Authorization": f"Bearer {OPERATOR_KEY}"}
APP = {"Authorization": f"Bearer {APP_KEY}"}
ASK = [{"role": "user", "content": "Describe the moon."}]
TOKENS = 24
# On the served Q4_1 file llama.cpp computes with 8-bit activations where PEFT computes in f32, so the
# two part ways after a few tokens. Along llama.cpp's greedy path, PEFT's log-probability of each chosen
# token stays within this many nats on average (measured 0.032 over 24 tokens; 8 of 24 greedy tokens as PEFT).
Q4_1_MEAN_LOGPROB_TOLERANCE = 0.1
Q4_1_SAME_PREFIX = 4


@pytest.fixture(scope="module")
def peft_model(embedded_engine, tmp_path_factory):
    """A real LoRA (random, small, on every projection) on the f32 base, and its directory."""
    from peft import LoraConfig, get_peft_model

    from agentstack.compute import worker

    path = tmp_path_factory.mktemp("lora") / "adapter"

    def build():
        import torch

        torch.manual_seed(0)
        base = copy.deepcopy(embedded_engine._versions[embedded_engine.base_name].module)
        config = LoraConfig(r=8, lora_alpha=32, init_lora_weights=False,
                            target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
        model = get_peft_model(base, config).eval()
        with torch.no_grad():
            for name, param in model.named_parameters():
                if "lora_B" in name:
                    param.mul_(0.1)
        model.save_pretrained(path)
        return model

    return worker().run(build), path


def _peft_greedy(embedded_engine, model, ids):
    """PEFT's greedy continuation and the log-probabilities it gives to ``path`` (teacher forced)."""
    from agentstack.compute import worker

    def run():
        import torch

        with torch.inference_mode():
            out = model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                                 max_new_tokens=TOKENS, do_sample=False)
        return out[0, len(ids):].tolist()

    return worker().run(run)


def _peft_logprobs(model, ids, path):
    from agentstack.compute import worker

    def run():
        import torch

        with torch.inference_mode():
            logits = model(torch.tensor([ids + path])).logits[0, len(ids) - 1:-1].float()
        logp = torch.log_softmax(logits, dim=-1)
        return [float(logp[i, t]) for i, t in enumerate(path)]

    return worker().run(run)


def _llama_greedy(model_file, adapter, ids):
    """llama.cpp's greedy tokens and their log-probabilities with ``adapter`` on ``model_file``."""
    from agentstack.engines.llamacpp.instance import Instance

    instance = Instance(model_file, [adapter], n_ctx=1024, n_parallel=1, threads=None, label="roundtrip").start()
    chunks = []
    try:
        instance.generate({"prompt": ids, "max_tokens": TOKENS, "temperature": 0, "stream": True, "logprobs": 1,
                           "lora": [{"id": 0, "scale": 1.0}]}, lambda c: chunks.append(c) and False)
    finally:
        instance.retire()
    content = [t for c in chunks for ch in c.get("choices", []) for t in ((ch.get("logprobs") or {}).get("content")
                                                                           or [])]
    return [t["id"] for t in content], [t["logprob"] for t in content]


def test_converted_adapter_matches_peft(embedded_engine, peft_model):
    from agentstack.engines.embedded.weights import default_gguf_path
    from agentstack.engines.llamacpp.lora import CONVERTER, conversion_record, converted_adapter
    from agentstack.engines.llamacpp.quantize import cached

    model, path = peft_model
    _, ids = embedded_engine.render(ASK)
    peft_ids = _peft_greedy(embedded_engine, model, ids)
    shipped = default_gguf_path()
    f32 = cached(shipped, "F32", MODEL_CACHE)  # exactly the weights the torch engine computes with

    adapter = converted_adapter(path, f32, MODEL_CACHE)
    assert conversion_record(adapter)["converter"] == CONVERTER
    llama_ids, llama_lp = _llama_greedy(f32, adapter, ids)
    assert llama_ids == peft_ids  # greedy output identical on the f32 base
    peft_lp = _peft_logprobs(model, ids, llama_ids)
    assert max(abs(a - b) for a, b in zip(llama_lp, peft_lp)) < 0.05

    served = converted_adapter(path, shipped, MODEL_CACHE)
    q_ids, q_lp = _llama_greedy(shipped, served, ids)
    assert q_ids[:Q4_1_SAME_PREFIX] == peft_ids[:Q4_1_SAME_PREFIX]
    peft_q = _peft_logprobs(model, ids, q_ids)
    mean = sum(abs(a - b) for a, b in zip(q_lp, peft_q)) / len(q_lp)
    print(f"Q4_1: {sum(a == b for a, b in zip(q_ids, peft_ids))}/{TOKENS} tokens as PEFT, mean |dlogprob| {mean:.3f}")
    assert mean < Q4_1_MEAN_LOGPROB_TOLERANCE


def test_adapters_the_converter_refuses(tmp_path, peft_model):
    from agentstack.engines.embedded.weights import default_gguf_path
    from agentstack.engines.llamacpp.lora import convert
    from agentstack.errors import InvalidRequestError

    _, path = peft_model
    bad = tmp_path / "dora"
    bad.mkdir()
    config = json.loads((path / "adapter_config.json").read_text())
    (bad / "adapter_config.json").write_text(json.dumps({**config, "use_dora": True}))
    (bad / "adapter_model.safetensors").write_bytes((path / "adapter_model.safetensors").read_bytes())
    with pytest.raises(InvalidRequestError, match="use_dora"):
        convert(bad, default_gguf_path(), tmp_path / "out.gguf")
    assert not (tmp_path / "out.gguf").exists()


@pytest.fixture(scope="module")
def server(llamacpp_engine, tmp_path_factory):
    from server.app import create_app
    from tests.conftest import LiveServer, make_settings

    with LiveServer(create_app(make_settings(tmp_path_factory.mktemp("llama-lora")), engine=llamacpp_engine)) as srv:
        yield srv


@pytest.fixture(scope="module")
def strong_adapter(embedded_engine, tmp_path_factory):
    """A LoRA whose answers are plainly not the base model's (random, full scale, q and v)."""
    from tests.integration.test_lora_hot_swap import make_adapter

    return make_adapter(embedded_engine, tmp_path_factory.mktemp("strong") / "adapter")


def _opening(text: str, words: int = 4) -> list[str]:
    """llama.cpp is not batch-invariant, and a slot may reuse a cached prefix computed inside another
    batch, so the same model's greedy answers are compared by their opening words."""
    return text.split()[:words]


def _chat(server, model, headers=APP):
    body = {"model": model, "messages": ASK, "max_tokens": 12, "temperature": 0}
    return httpx.post(f"{server.url}/v1/chat/completions", json=body, headers=headers, timeout=120)


def test_swap_starts_a_new_instance_while_the_old_one_drains(server, strong_adapter, llamacpp_engine):
    path = strong_adapter
    svc = server.app.state.services
    base_text = _chat(server, "agentstack").json()["choices"][0]["message"]["content"]
    before = llamacpp_engine.stats()["instance"]
    old = llamacpp_engine._instance
    swapped = threading.Event()
    first_token = threading.Event()

    async def long_stream():
        """A request admitted before the swap: it keeps generating on the old instance afterwards."""
        stream = llamacpp_engine.stream(ChatRequest(messages=ASK, model=llamacpp_engine.base_name,
                                                    params=SamplingParams(temperature=0, max_tokens=2000,
                                                                          ignore_eos=True)))
        after_swap = 0
        async for event in stream:
            if event.text:
                first_token.set()
                after_swap += swapped.is_set()
                if after_swap >= 5:
                    break
        await stream.aclose()
        return after_swap

    outcome = {}
    runner = threading.Thread(target=lambda: outcome.update(result=asyncio.run(long_stream())))
    runner.start()
    try:
        assert first_token.wait(60)
        r = httpx.post(f"{server.url}/v1/load_lora_adapter", json={"lora_name": "v-gguf", "lora_path": str(path)},
                       headers=OP, timeout=300)
        assert r.status_code == 200, r.text
        assert llamacpp_engine.stats()["instance"] != before
        assert old.inflight == 1 and old._server is not None  # still serving the pinned request
        swapped.set()
        previous = svc.router.activate("v-gguf")
        after = _chat(server, "agentstack").json()
        assert after["model_version"] == "v-gguf" and previous == llamacpp_engine.base_name
        adapted = after["choices"][0]["message"]["content"]
        assert _opening(adapted) != _opening(base_text)
        # by name: the base is no longer the active version, so only an operator may ask for it (app keys
        # get the active one and the versions marked selectable)
        refused = _chat(server, llamacpp_engine.base_name)
        assert refused.status_code in (403, 404), refused.text
        base_again = _chat(server, llamacpp_engine.base_name, OP).json()["choices"][0]["message"]["content"]
        assert _opening(base_again) == _opening(base_text)  # scale 0 for the adapter: the base model
    finally:
        swapped.set()
        runner.join(120)
        svc.router.activate(llamacpp_engine.base_name)
    assert outcome["result"] >= 5  # the old instance went on generating for its request after the swap
    for _ in range(100):
        if old._server is None:
            break
        import time

        time.sleep(0.1)
    assert old._server is None  # drained, then stopped
    assert _opening(_chat(server, "agentstack").json()["choices"][0]["message"]["content"]) == _opening(base_text)
    r = httpx.post(f"{server.url}/v1/unload_lora_adapter", json={"lora_name": "v-gguf"}, headers=OP)
    assert r.status_code == 200
    assert _chat(server, "v-gguf").status_code == 404

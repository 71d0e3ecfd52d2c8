"""The production topology: the official openai client → agentstack (``engine.kind=openai``) →
real vLLM. Chat, streaming, tools, JSON, the errors a client sees, and LoRA adapters loaded by hand,
including the ones vLLM refuses (which must come back as a 4xx that says why, not "engine
unavailable")."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.conftest import APP_KEY
from tests.integration.test_tool_calling import WEATHER, assert_streams_a_named_weather_call
from tests.vllm_tier.vllm_support import OP, front_server, lora

pytestmark = pytest.mark.vllm


@pytest.fixture(scope="module")
def front(vllm_server, tmp_path_factory):
    with front_server(tmp_path_factory.mktemp("front"), vllm_server.base_url, vllm_server.served_name) as srv:
        yield srv


@pytest.fixture(scope="module")
def client(front):
    from openai import OpenAI

    return OpenAI(base_url=f"{front.url}/v1", api_key=APP_KEY, max_retries=0, timeout=300)


def test_chat_stream_and_usage_through_agentstack(client, front, vllm_server):
    q = [{"role": "user", "content": "What is the capital of France?"}]
    full = client.chat.completions.create(model="agentstack", messages=q, temperature=0, max_tokens=16)
    assert "Paris" in full.choices[0].message.content
    assert full.model_dump()["model_version"] == vllm_server.served_name
    pieces, usage = [], None
    for chunk in client.chat.completions.create(model="agentstack", messages=q, temperature=0, max_tokens=16,
                                                stream=True, stream_options={"include_usage": True}):
        usage = chunk.usage or usage
        pieces += [c.delta.content or "" for c in chunk.choices]
    assert "".join(pieces) == full.choices[0].message.content
    assert usage.completion_tokens == full.usage.completion_tokens
    stored = front.app.state.services.responses.get(full.id)
    assert stored.answer == full.choices[0].message.content and stored.model_version == vllm_server.served_name


def test_tools_and_json_through_agentstack(client):
    assert_streams_a_named_weather_call(client, [WEATHER])
    schema = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 30}}, "required": ["city"],
              "additionalProperties": False}
    out = client.chat.completions.create(model="agentstack", temperature=0, max_tokens=40, messages=[
        {"role": "user", "content": "Name the capital of France as JSON."}],
        response_format={"type": "json_schema", "json_schema": {"name": "c", "schema": schema}})
    assert set(json.loads(out.choices[0].message.content)) == {"city"}


def test_errors_a_client_sees(client):
    import openai

    with pytest.raises(openai.BadRequestError) as too_long:
        client.chat.completions.create(model="agentstack", max_tokens=4,
                                       messages=[{"role": "user", "content": "hi " * 9000}])
    message = too_long.value.body["message"]
    assert too_long.value.body["code"] == "context_length_exceeded" and "8192" in message and "8193" in message
    with pytest.raises(openai.NotFoundError, match="available: agentstack"):
        client.chat.completions.create(model="gpt-9", max_tokens=4, messages=[{"role": "user", "content": "hi"}])


def test_adapters_by_hand_context_and_refusals(front, vllm_server, embedded_engine, tmp_path):
    def load(name, path):
        return httpx.post(f"{front.url}/v1/load_lora_adapter", headers=OP, timeout=300,
                          json={"lora_name": name, "lora_path": str(path)})

    good = lora(embedded_engine, tmp_path / "good", seed=1)
    assert load("by-hand", good).status_code == 200
    try:
        cards = {m["id"]: m for m in httpx.get(f"{front.url}/v1/models", headers=OP).json()["data"]}
        # vLLM's card for a LoRA has no max_model_len; agentstack gives it the parent's
        assert cards["by-hand"]["parent"] == vllm_server.served_name and cards["by-hand"]["max_model_len"] == 8192
        assert front.app.state.services.engine.context_length("by-hand") == 8192
    finally:
        assert httpx.post(f"{front.url}/v1/unload_lora_adapter", headers=OP,
                          json={"lora_name": "by-hand"}).status_code == 200
    refused = {"rank 128 is above the engine's max LoRA rank 64": lora(embedded_engine, tmp_path / "r128", r=128),
               "DoRA": lora(embedded_engine, tmp_path / "dora", use_dora=True),
               "modules_to_save": lora(embedded_engine, tmp_path / "mts", modules_to_save=["lm_head"])}
    for why, path in refused.items():
        r = load("refused", path)
        assert r.status_code == 400 and why in r.json()["error"]["message"], r.text
    # what vLLM itself answers for the same adapter: a 500, which is why agentstack checks first
    raw = httpx.post(f"{vllm_server.base_url}/load_lora_adapter", timeout=300,
                     json={"lora_name": "raw-dora", "lora_path": str(refused["DoRA"])})
    assert raw.status_code == 500 and "DoRA" in raw.text
    assert "refused" not in {m["id"] for m in httpx.get(f"{vllm_server.base_url}/models").json()["data"]}


def test_a_job_vllm_could_not_serve_is_refused_when_submitted(front):
    spec = {"method": "dpo", "hyperparameters": {"lora_r": 128}}
    r = httpx.post(f"{front.url}/v1/admin/alignment/jobs", headers=OP, json=spec)
    assert r.status_code == 400 and "max LoRA rank 64" in r.json()["error"]["message"]
    r = httpx.post(f"{front.url}/v1/admin/alignment/jobs", headers=OP, json={"method": "dpo"})
    assert r.status_code == 400 and "alignment.base_model" in r.json()["error"]["message"]  # no weights to train

"""LoRA adapters through vLLM's routes, and an atomic swap of the active version while streams run."""

from __future__ import annotations

import asyncio
import copy
import shutil

import httpx
import pytest

from tests.conftest import APP_KEY, OPERATOR_KEY

pytestmark = pytest.mark.integration
OP = {"Authorization": f"Bearer {OPERATOR_KEY}"}
APP = {"Authorization": f"Bearer {APP_KEY}"}


def make_adapter(engine, path):
    """A real (random, non-zero) LoRA on the base model, built on the compute worker."""
    from peft import LoraConfig, get_peft_model

    from agentstack.compute import worker

    def build():
        import torch

        torch.manual_seed(0)
        base = copy.deepcopy(engine._versions[engine.base_name].module)
        config = LoraConfig(r=8, lora_alpha=32, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
        get_peft_model(base, config).save_pretrained(path)

    worker().run(build)
    return path


@pytest.fixture(scope="module")
def adapter(embedded_engine, tmp_path_factory):
    return make_adapter(embedded_engine, tmp_path_factory.mktemp("lora") / "adapter")


@pytest.fixture(scope="module")
def server(embedded_engine, tmp_path_factory):
    from server.app import create_app
    from tests.conftest import LiveServer, make_settings

    with LiveServer(create_app(make_settings(tmp_path_factory.mktemp("lora-srv")), engine=embedded_engine)) as srv:
        yield srv


def _chat(server, model, **extra):
    body = {"model": model, "messages": [{"role": "user", "content": "Describe the moon."}], "max_tokens": 12,
            "temperature": 0, **extra}
    return httpx.post(f"{server.url}/v1/chat/completions", json=body, headers=APP, timeout=120)


def test_load_use_unload_adapter(server, adapter, tmp_path):
    base_text = _chat(server, "agentstack").json()["choices"][0]["message"]["content"]
    r = httpx.post(f"{server.url}/v1/load_lora_adapter", json={"lora_name": "v-test", "lora_path": str(adapter)},
                   headers=OP, timeout=120)
    assert r.status_code == 200 and "added successfully" in r.text
    models = httpx.get(f"{server.url}/v1/models", headers=OP, timeout=60).json()["data"]
    card = next(m for m in models if m["id"] == "v-test")
    assert card["parent"] == "SmolLM2-135M-Instruct"
    assert _chat(server, "v-test").status_code == 403  # not active, not marked selectable: operators only
    assert "v-test" not in [m["id"] for m in httpx.get(f"{server.url}/v1/models", headers=APP, timeout=60).json()["data"]]
    r = httpx.post(f"{server.url}/v1/admin/models/v-test/selectable", headers=OP, json={"selectable": True}, timeout=60)
    assert r.status_code == 200
    out = _chat(server, "v-test").json()
    assert out["model_version"] == "v-test"
    assert out["choices"][0]["message"]["content"] != base_text
    again = httpx.post(f"{server.url}/v1/load_lora_adapter", json={"lora_name": "v-test", "lora_path": str(adapter)},
                       headers=OP)
    assert again.status_code == 400 and "load_inplace" in again.json()["error"]["message"]  # vLLM's answer
    inplace = httpx.post(f"{server.url}/v1/load_lora_adapter", headers=OP, timeout=120,
                         json={"lora_name": "v-test", "lora_path": str(adapter), "load_inplace": True})
    assert inplace.status_code == 200 and _chat(server, "v-test").json()["choices"][0]["message"]["content"] \
        == out["choices"][0]["message"]["content"]  # the same weights again
    # an in-place load that fails (no adapter there; a config without weights) keeps the old weights served
    broken = tmp_path / "broken"
    broken.mkdir()
    shutil.copy(adapter / "adapter_config.json", broken / "adapter_config.json")
    for path, status in (("/no/such", 404), (str(broken), None)):
        r = httpx.post(f"{server.url}/v1/load_lora_adapter", headers=OP, timeout=120,
                       json={"lora_name": "v-test", "lora_path": path, "load_inplace": True})
        assert (r.status_code == status) if status else (400 <= r.status_code < 500), r.text
        assert _chat(server, "v-test").json()["choices"][0]["message"]["content"] \
            == out["choices"][0]["message"]["content"]
    missing = httpx.post(f"{server.url}/v1/load_lora_adapter", json={"lora_name": "nope", "lora_path": "/no/such"},
                         headers=OP)
    assert missing.status_code == 404 and "adapter_config.json" in missing.json()["error"]["message"]
    r = httpx.post(f"{server.url}/v1/unload_lora_adapter", json={"lora_name": "v-test"}, headers=OP)
    assert r.status_code == 200
    assert _chat(server, "v-test").status_code == 404
    audit = server.app.state.services.audit.list()
    assert [a["action"] for a in audit][:2] == ["lora.unload", "lora.load"]
    assert "model.selectable" in [a["action"] for a in audit]
    assert audit[0]["key_id"] == "op1"


def test_swap_while_streams_are_in_flight(server, adapter, embedded_engine):
    """Streams admitted before the swap finish on the old version; requests after it use the new one."""
    svc = server.app.state.services
    r = httpx.post(f"{server.url}/v1/load_lora_adapter", json={"lora_name": "v-swap", "lora_path": str(adapter)},
                   headers=OP, timeout=120)
    assert r.status_code == 200

    async def stream_one(client, started: asyncio.Event):
        body = {"model": "agentstack", "messages": [{"role": "user", "content": "Count to fifty."}],
                "max_tokens": 40, "ignore_eos": True, "temperature": 0, "stream": True,
                "stream_options": {"include_usage": True}}
        versions, tokens = set(), 0
        async with client.stream("POST", "/v1/chat/completions", json=body) as response:
            async for line in response.aiter_lines():
                if line.startswith("data:") and "[DONE]" not in line:
                    import json

                    chunk = json.loads(line[5:])
                    if chunk.get("model_version"):
                        versions.add(chunk["model_version"])
                    tokens += sum(1 for c in chunk["choices"] if c["delta"].get("content"))
                    started.set()
        return versions, tokens

    async def scenario():
        async with httpx.AsyncClient(base_url=server.url, headers=APP, timeout=120) as client:
            started = asyncio.Event()
            tasks = [asyncio.create_task(stream_one(client, started)) for _ in range(4)]
            await started.wait()
            previous = svc.router.activate("v-swap")
            after = (await client.post("/v1/chat/completions", json={
                "model": "agentstack", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2})).json()
            results = await asyncio.gather(*tasks)
            return previous, after, results

    try:
        previous, after, results = asyncio.run(scenario())
        assert previous == "SmolLM2-135M-Instruct"
        assert after["model_version"] == "v-swap"
        for versions, tokens in results:
            assert versions == {"SmolLM2-135M-Instruct"} and tokens > 10
        metrics = httpx.get(f"{server.url}/metrics", headers=OP).text
        assert 'agentstack_active_model_version{version="v-swap"} 1.0' in metrics
    finally:
        svc.router.activate("SmolLM2-135M-Instruct")
        httpx.post(f"{server.url}/v1/unload_lora_adapter", json={"lora_name": "v-swap"}, headers=OP)


def test_active_version_survives_restart(tmp_path, embedded_engine, adapter):
    from agentstack.engines.router import ModelRouter

    asyncio.run(embedded_engine.load_adapter("v-persist", adapter))
    try:
        from agentstack.config import load_settings
        from agentstack.db import open_db
        from agentstack.state.records import ModelState

        state = ModelState(open_db(load_settings(data_dir=tmp_path / "data")), "agentstack")
        ModelRouter(embedded_engine, "agentstack", state).activate("v-persist")
        assert ModelRouter(embedded_engine, "agentstack", state).active == "v-persist"
    finally:
        asyncio.run(embedded_engine.unload_adapter("v-persist"))
    # the persisted version is gone: the router falls back to the base model instead of failing
    assert ModelRouter(embedded_engine, "agentstack", state).active == "SmolLM2-135M-Instruct"

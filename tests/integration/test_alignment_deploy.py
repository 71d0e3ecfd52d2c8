"""Promotion and rollback through the operator API: promotion while streams are in flight (each
stream completes on one named version), the gate's verdict enforced (force is audited), rollback
to any earlier version, eviction of old adapters, and the vLLM path (``/v1/load_lora_adapter`` on
the model server behind an ``openai`` engine)."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from tests.conftest import OPERATOR_KEY
from tests.integration.alignment_support import APP, OP, alignment_server, random_adapter, register

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def server(embedded_engine, tmp_path_factory):
    with alignment_server(embedded_engine, tmp_path_factory.mktemp("deploy"), max_loaded_versions=3) as srv:
        yield srv


@pytest.fixture(scope="module")
def versions(server, embedded_engine, tmp_path_factory):
    d = tmp_path_factory.mktemp("adapters")
    root = server.app.state.services.settings.registry_path
    names = {}
    for label, seed, passed in (("a", 1, True), ("b", 2, True), ("c", 3, True), ("rejected", 4, False),
                                ("ungated", 5, None)):
        names[label] = register(root, random_adapter(embedded_engine, d / label, seed=seed, scale=0.5),
                                passed=passed)
    return names


def promote(server, version, **body):
    return httpx.post(f"{server.url}/v1/admin/models/{version}/promote", headers=OP, json=body or None, timeout=120)


def rollback(server, version=None):
    return httpx.post(f"{server.url}/v1/admin/models/rollback", headers=OP, json={"version": version}, timeout=120)


def active(server):
    return httpx.get(f"{server.url}/v1/admin/models", headers=OP).json()["active"]


def test_promote_while_streams_are_in_flight(server, versions, embedded_engine):
    target = versions["a"]

    async def stream_one(client, started):
        body = {"model": "agentstack", "messages": [{"role": "user", "content": "Count to fifty."}],
                "max_tokens": 40, "ignore_eos": True, "temperature": 0, "stream": True,
                "stream_options": {"include_usage": True}}
        seen, tokens, ids = set(), 0, set()
        async with client.stream("POST", "/v1/chat/completions", json=body) as response:
            async for line in response.aiter_lines():
                if line.startswith("data:") and "[DONE]" not in line:
                    chunk = json.loads(line[5:])
                    ids.add(chunk["id"])
                    if chunk.get("model_version"):
                        seen.add(chunk["model_version"])
                    tokens += sum(1 for c in chunk["choices"] if c["delta"].get("content"))
                    started.set()
        return seen, tokens, ids

    async def scenario():
        async with httpx.AsyncClient(base_url=server.url, headers=APP, timeout=180) as client:
            started = asyncio.Event()
            streams = [asyncio.create_task(stream_one(client, started)) for _ in range(4)]
            await started.wait()
            swap = await client.post(f"/v1/admin/models/{target}/promote", headers=OP)
            after = await client.post("/v1/chat/completions", json={
                "model": "agentstack", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2})
            return swap, after.json(), await asyncio.gather(*streams)

    swap, after, results = asyncio.run(scenario())
    assert swap.status_code == 200 and swap.json()["active"] == target, swap.text
    assert after["model_version"] == target
    store = server.app.state.services.responses
    for seen, tokens, ids in results:
        assert seen == {embedded_engine.base_name} and tokens > 10
        (stream_id,) = ids  # one completion per stream, stored with the one version it ran on
        assert store.get(stream_id).model_version == embedded_engine.base_name
    audit = httpx.get(f"{server.url}/v1/admin/audit", headers=OP, params={"action": "model.promote"}).json()["data"]
    assert audit[0]["target"] == target and audit[0]["key_id"] == "op1" and audit[0]["outcome"] == "ok"


def test_the_gate_verdict_is_enforced_and_force_is_audited(server, versions):
    r = promote(server, versions["rejected"])
    assert r.status_code == 409 and "rejected by the gate" in r.json()["error"]["message"]
    assert promote(server, versions["ungated"]).status_code == 409
    assert promote(server, "v99-none").status_code == 404
    forced = promote(server, versions["rejected"], force=True)
    assert forced.status_code == 200 and active(server) == versions["rejected"]
    audit = httpx.get(f"{server.url}/v1/admin/audit", headers=OP, params={"action": "model.promote"}).json()["data"]
    assert audit[0]["detail"]["force"] is True and [a["outcome"] for a in audit[1:4]] == ["error"] * 3
    back = rollback(server)
    assert back.status_code == 200
    assert (back.json()["active"], back.json()["previous"]) == (versions["a"], versions["rejected"])


def test_rollback_to_any_earlier_version_and_eviction(server, versions, embedded_engine):
    for name in ("a", "b", "c"):
        assert promote(server, versions[name]).status_code == 200
    assert active(server) == versions["c"]
    loaded = httpx.get(f"{server.url}/v1/admin/models", headers=OP).json()["loaded"]
    assert len(loaded) <= 3 and versions["c"] in loaded and embedded_engine.base_name in loaded
    r = rollback(server, versions["a"])
    assert r.status_code == 200 and r.json() | {"evicted": []} == {"active": versions["a"], "previous": versions["c"],
                                                                   "changed": True, "evicted": []}
    assert rollback(server).json()["active"] == versions["c"]  # default: the previous version
    assert rollback(server, versions["ungated"]).status_code == 409  # never served
    assert rollback(server, "v99-none").status_code == 404
    assert rollback(server, embedded_engine.base_name).json()["active"] == embedded_engine.base_name
    out = httpx.post(f"{server.url}/v1/chat/completions", headers=APP, timeout=120, json={
        "model": "agentstack", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}).json()
    assert out["model_version"] == embedded_engine.base_name
    history = httpx.get(f"{server.url}/v1/admin/models", headers=OP).json()["deployments"]
    assert [h["action"] for h in history[-3:]] == ["rollback"] * 3


def test_promotion_through_a_vllm_style_model_server(server, versions, tmp_path):
    """The front server's engine is ``openai``; promotion loads the adapter on the model server with
    ``POST /v1/load_lora_adapter`` and then swaps the front's alias."""
    from agentstack.config import EngineSettings
    from agentstack.engines.openai_engine import OpenAIEngine
    from server.app import create_app
    from tests.conftest import LiveServer, make_settings

    svc = server.app.state.services  # the model server: back to its base model, no adapters loaded
    svc.router.activate(svc.router.base)
    for loaded in [v for v in svc.router.versions() if v != svc.router.base]:
        asyncio.run(svc.engine.unload_adapter(loaded))
    engine = OpenAIEngine(EngineSettings(kind="openai", base_url=f"{server.url}/v1", api_key=OPERATOR_KEY,
                                         timeout_s=120, max_retries=0))
    engine.warm_up()
    front_settings = make_settings(tmp_path / "front", engine={"kind": "openai", "base_url": f"{server.url}/v1"})
    adapter = server.app.state.services.settings.registry_path / "versions" / versions["b"] / "adapter"
    name = register(front_settings.registry_path, adapter)
    with LiveServer(create_app(front_settings, engine=engine)) as front:
        r = httpx.post(f"{front.url}/v1/admin/models/{name}/promote", headers=OP, timeout=120)
        assert r.status_code == 200, r.text
        assert name in server.app.state.services.router.versions()  # loaded on the model server
        out = httpx.post(f"{front.url}/v1/chat/completions", headers=APP, timeout=120, json={
            "model": "agentstack", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}).json()
        assert out["model_version"] == name
        assert httpx.post(f"{front.url}/v1/admin/models/rollback", headers=OP, json={}).json()["previous"] == name
    lora = httpx.get(f"{server.url}/v1/admin/audit", headers=OP, params={"action": "lora.load"}).json()["data"]
    assert lora[0]["target"] == name
    asyncio.run(engine.aclose())  # stops its adapter check, which would otherwise load `name` back
    httpx.post(f"{server.url}/v1/unload_lora_adapter", headers=OP, json={"lora_name": name})

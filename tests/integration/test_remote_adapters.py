"""The ``openai`` engine's adapters across replicas, against real agentstack servers standing in for
vLLM replicas (the same routes; ``tests/vllm_tier/`` repeats this against real vLLM): loading is
idempotent and all-or-nothing, and an adapter a replica lost is loaded again by itself."""

from __future__ import annotations

import asyncio
import socket
import time

import httpx
import pytest

from agentstack.config import EngineSettings
from agentstack.engines.openai_engine import OpenAIEngine
from agentstack.errors import EngineUnavailableError, InvalidRequestError
from tests.conftest import OPERATOR_KEY

pytestmark = pytest.mark.integration
OP = {"Authorization": f"Bearer {OPERATOR_KEY}"}


@pytest.fixture(scope="module")
def replica(embedded_engine, tmp_path_factory):
    from server.app import create_app
    from tests.conftest import LiveServer, make_settings

    with LiveServer(create_app(make_settings(tmp_path_factory.mktemp("replica")), engine=embedded_engine)) as srv:
        yield srv


@pytest.fixture(scope="module")
def adapter(embedded_engine, tmp_path_factory):
    from tests.integration.alignment_support import random_adapter

    return random_adapter(embedded_engine, tmp_path_factory.mktemp("remote") / "adapter", seed=6)


def dead_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}/v1"


def names(url: str) -> set[str]:
    return {m["id"] for m in httpx.get(f"{url}/v1/models", headers=OP, timeout=30).json()["data"]}


def engine_for(replica, *replicas: str, check_s: float = 5.0) -> OpenAIEngine:
    engine = OpenAIEngine(EngineSettings(kind="openai", base_url=f"{replica.url}/v1", api_key=OPERATOR_KEY,
                                         replica_urls=list(replicas), adapter_check_s=check_s, max_retries=0))
    engine.warm_up()
    return engine


def test_loading_is_idempotent_and_all_or_nothing(replica, adapter):
    engine = engine_for(replica, f"{replica.url}/v1", dead_url())

    async def go():
        with pytest.raises(EngineUnavailableError, match="loaded nowhere"):
            await engine.load_adapter("aon", adapter)
        assert "aon" not in names(replica.url)  # undone on the replica that had loaded it
        engine.settings.replica_urls = [f"{replica.url}/v1"]
        await engine.load_adapter("aon", adapter)
        await engine.load_adapter("aon", adapter)  # again: load_inplace, no error
        assert "aon" in names(replica.url) and "aon" in [m.id for m in engine.models()]
        await engine.unload_adapter("aon")
        await engine.unload_adapter("aon")  # already gone everywhere: nothing to do
        await engine.aclose()

    asyncio.run(go())
    assert "aon" not in names(replica.url)


def test_a_failed_reload_puts_the_old_weights_back(replica, adapter, embedded_engine, tmp_path):
    """A reload in place that one replica refuses leaves every replica on the tracked weights."""
    from tests.integration.alignment_support import random_adapter

    other = random_adapter(embedded_engine, tmp_path / "other", seed=7)
    engine = engine_for(replica, f"{replica.url}/v1")

    def answer() -> str:
        r = httpx.post(f"{replica.url}/v1/chat/completions", headers=OP, timeout=120, json={
            "model": "rb", "messages": [{"role": "user", "content": "Name three colours."}], "max_tokens": 12,
            "temperature": 0})
        return r.json()["choices"][0]["message"]["content"]

    async def go():
        await engine.load_adapter("rb", adapter)
        before = await asyncio.to_thread(answer)
        engine.settings.replica_urls = [f"{replica.url}/v1", dead_url()]
        with pytest.raises(EngineUnavailableError, match="keeps its previous weights"):
            await engine.load_adapter("rb", other)  # loaded on the first replica, then the second fails
        assert await asyncio.to_thread(answer) == before  # the first one was put back
        engine.settings.replica_urls = [f"{replica.url}/v1"]
        await engine.load_adapter("rb", other)
        assert await asyncio.to_thread(answer) != before  # (the two adapters do answer differently)
        await engine.unload_adapter("rb")
        await engine.aclose()

    asyncio.run(go())


def test_a_replica_that_lost_an_adapter_gets_it_back(replica, adapter):
    engine = engine_for(replica, check_s=0.5)

    async def go():
        await engine.load_adapter("kept", adapter)
        # the replica forgets it (what a vLLM restart does)
        r = httpx.post(f"{replica.url}/v1/unload_lora_adapter", headers=OP, json={"lora_name": "kept"})
        assert r.status_code == 200 and "kept" not in names(replica.url)
        deadline = time.monotonic() + 20
        while "kept" not in names(replica.url) and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        assert "kept" in names(replica.url) and engine.stats()["adapter_reloads"] >= 1
        await engine.unload_adapter("kept")
        await engine.aclose()

    asyncio.run(go())


def test_adapters_the_engine_cannot_serve_are_refused_before_loading(replica, embedded_engine, tmp_path):
    from tests.integration.alignment_support import random_adapter

    engine = engine_for(replica)
    too_big = random_adapter(embedded_engine, tmp_path / "r128", r=128)
    with pytest.raises(InvalidRequestError, match="rank 128 is above the engine's max LoRA rank 64"):
        asyncio.run(engine.load_adapter("big", too_big))
    assert "big" not in names(replica.url)

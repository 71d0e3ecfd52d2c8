"""The ChatEngine contract, run against every real implementation: the llamacpp engine (llama.cpp in
process, the default), the embedded engine (torch in process), and the openai engine talking to a
real agentstack server on loopback (no HTTP mocks)."""

from __future__ import annotations

import asyncio

import pytest

from agentstack.config import EngineSettings
from agentstack.engines.base import ChatRequest
from agentstack.engines.params import SamplingParams
from agentstack.errors import (ContextLengthError, EngineUnavailableError, InvalidRequestError,
                               ModelNotFoundError)
from tests.conftest import OPERATOR_KEY

pytestmark = pytest.mark.integration
Q = [{"role": "user", "content": "Which city is the capital of France?"}]


@pytest.fixture(scope="module")
def server(llamacpp_engine, tmp_path_factory):
    from server.app import create_app
    from tests.conftest import LiveServer, make_settings

    with LiveServer(create_app(make_settings(tmp_path_factory.mktemp("contract")), engine=llamacpp_engine)) as srv:
        yield srv


@pytest.fixture(params=["llamacpp", "embedded", "openai"])
def engine_and_model(request):
    if request.param != "openai":
        engine = request.getfixturevalue(f"{request.param}_engine")
        return engine, engine.base_name
    from agentstack.engines.openai_engine import OpenAIEngine

    server = request.getfixturevalue("server")
    engine = OpenAIEngine(EngineSettings(kind="openai", base_url=f"{server.url}/v1", api_key=OPERATOR_KEY,
                                         timeout_s=60, max_retries=0))
    engine.warm_up()
    return engine, "agentstack"


def run(coro):
    return asyncio.run(coro)


def test_chat_and_stream_agree(engine_and_model):
    engine, model = engine_and_model
    params = SamplingParams(temperature=0, max_tokens=16)

    async def go():
        full = await engine.chat(ChatRequest(messages=Q, model=model, params=params))
        pieces, last = [], None
        async for ev in engine.stream(ChatRequest(messages=Q, model=model, params=params)):
            pieces.append(ev.text)
            last = ev
        return full, "".join(pieces), last

    full, streamed, last = run(go())
    # What a 135M Q4_1 model answers is not the contract: llama.cpp's greedy output moves with the
    # prompt cache a shared engine carries from earlier tests ("Paris" alone, "Le Grand Château ..."
    # after a full suite). That both paths give the same tokens is.
    assert full.text.strip() and full.usage.completion_tokens > 0
    assert streamed == full.text
    assert last.usage is not None and last.usage.completion_tokens == full.usage.completion_tokens
    assert full.model_version


def test_vllm_extras_and_stop(engine_and_model):
    engine, model = engine_and_model
    params = SamplingParams(temperature=0.7, top_k=5, repetition_penalty=1.3, seed=3, max_tokens=16,
                            stop=["\n"])
    result = run(engine.chat(ChatRequest(messages=Q, model=model, params=params)))
    assert "\n" not in result.text
    again = run(engine.chat(ChatRequest(messages=Q, model=model, params=params)))
    assert again.text == result.text  # seeded


def _served_by(engine, request):
    """The in-process engine that does the work (the server's, for the openai engine)."""
    return engine if engine.kind != "openai" else request.getfixturevalue("llamacpp_engine")


def test_count_tokens_and_context_length(engine_and_model, request):
    engine, model = engine_and_model
    count = run(engine.count_tokens(Q, model))
    assert count == len(_served_by(engine, request).render(Q)[1])
    assert engine.context_length(model) == 8192
    assert any(m.id == model for m in engine.models())


def test_errors_before_first_event(engine_and_model):
    engine, model = engine_and_model

    async def first(request):
        stream = engine.stream(request)
        try:
            return await stream.__anext__()
        finally:
            await stream.aclose()

    with pytest.raises(ModelNotFoundError):
        run(first(ChatRequest(messages=Q, model="no-such-model")))
    with pytest.raises(ContextLengthError):
        run(first(ChatRequest(messages=[{"role": "user", "content": "hi " * 9000}], model=model)))
    with pytest.raises(InvalidRequestError):
        run(first(ChatRequest(messages=Q, model=model, params=SamplingParams(max_tokens=100_000))))


def test_closing_the_stream_cancels(engine_and_model, request):
    engine, model = engine_and_model
    served = _served_by(engine, request)

    async def go():
        stream = engine.stream(ChatRequest(messages=Q, model=model,
                                           params=SamplingParams(max_tokens=1000, ignore_eos=True)))
        async for ev in stream:
            if ev.text:
                break
        await stream.aclose()
        for _ in range(100):
            if served.stats()["running"] == 0:
                return True
            await asyncio.sleep(0.1)
        return False

    assert run(go())


def test_openai_engine_reports_a_down_server_clearly():
    import socket

    from agentstack.engines.openai_engine import OpenAIEngine

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    engine = OpenAIEngine(EngineSettings(kind="openai", base_url=f"http://127.0.0.1:{port}/v1", timeout_s=2,
                                         max_retries=1))
    engine.warm_up()  # warns, does not fail: vLLM may come up later
    with pytest.raises(EngineUnavailableError, match=f"127.0.0.1:{port}") as info:
        run(engine.chat(ChatRequest(messages=Q, model="x")))
    assert "AGENTSTACK_ENGINE__BASE_URL" in str(info.value)

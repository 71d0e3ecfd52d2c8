"""The HTTP surface agentstack shares with vLLM, asked of both servers with the same requests:
``/tokenize``, the OpenAI error shape, and LoRA loading (vLLM's ``load_inplace`` rule). Where
agentstack used to differ (409 for a second load of a name) it now answers as vLLM does."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import OPERATOR_KEY

pytestmark = pytest.mark.integration
OP = {"Authorization": f"Bearer {OPERATOR_KEY}"}
SERVERS = ["agentstack", pytest.param("vllm", marks=pytest.mark.vllm)]
Q = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def agentstack_server(embedded_engine, tmp_path_factory):
    from server.app import create_app
    from tests.conftest import LiveServer, make_settings

    with LiveServer(create_app(make_settings(tmp_path_factory.mktemp("server-contract")),
                               engine=embedded_engine)) as srv:
        yield srv


@pytest.fixture(params=SERVERS)
def server(request):
    """(root URL, the name of the base model there)."""
    if request.param == "agentstack":
        return request.getfixturevalue("agentstack_server").url, "agentstack"
    vllm = request.getfixturevalue("vllm_server")
    return vllm.url, vllm.served_name


@pytest.fixture(scope="module")
def adapter(embedded_engine, tmp_path_factory):
    from tests.vllm_tier.vllm_support import lora

    return lora(embedded_engine, tmp_path_factory.mktemp("contract-lora") / "adapter", seed=3)


def post(url: str, path: str, body: dict) -> httpx.Response:
    return httpx.post(f"{url}{path}", json=body, headers=OP, timeout=300)


def test_tokenize_chat_and_prompt(server, embedded_engine):
    url, model = server
    chat = post(url, "/tokenize", {"model": model, "messages": Q}).json()
    assert chat["count"] == len(embedded_engine.render(Q)[1]) and chat["max_model_len"] == 8192
    assert post(url, "/tokenize", {"model": model, "prompt": "hello world", "add_special_tokens": False}
                ).json()["count"] == 2


def test_errors_have_openai_shape_and_status(server):
    url, model = server
    unknown = post(url, "/v1/chat/completions", {"model": "gpt-9", "messages": Q, "max_tokens": 4})
    assert unknown.status_code == 404 and unknown.json()["error"]["param"] == "model"
    too_long = post(url, "/v1/chat/completions", {"model": model, "max_tokens": 4,
                                                  "messages": [{"role": "user", "content": "hi " * 9000}]})
    assert too_long.status_code == 400 and "8192" in too_long.json()["error"]["message"]
    bad = post(url, "/v1/chat/completions", {"model": model, "messages": Q, "temperature": -1})
    assert bad.status_code == 400 and "temperature" in (bad.json()["error"]["message"] +
                                                        str(bad.json()["error"].get("param")))
    greedy_n = post(url, "/v1/chat/completions", {"model": model, "messages": Q, "temperature": 0, "n": 2})
    assert greedy_n.status_code == 400 and "n must be 1 when using greedy sampling" in greedy_n.text


def test_loading_a_name_again_needs_load_inplace(server, adapter):
    url, _ = server
    body = {"lora_name": "contract-lora", "lora_path": str(adapter)}
    try:
        assert post(url, "/v1/load_lora_adapter", body).status_code == 200
        again = post(url, "/v1/load_lora_adapter", body)
        assert again.status_code == 400 and "already been loaded" in again.json()["error"]["message"]
        assert post(url, "/v1/load_lora_adapter", {**body, "load_inplace": True}).status_code == 200
        card = next(m for m in httpx.get(f"{url}/v1/models", headers=OP).json()["data"] if m["id"] == body["lora_name"])
        assert card["parent"]
    finally:
        assert post(url, "/v1/unload_lora_adapter", {"lora_name": body["lora_name"]}).status_code == 200
    gone = post(url, "/v1/unload_lora_adapter", {"lora_name": body["lora_name"]})
    assert gone.status_code == 404


def test_an_adapter_cannot_take_the_base_models_name(server, adapter):
    url, model = server
    base = model if model != "agentstack" else httpx.get(f"{url}/v1/models", headers=OP).json()["data"][1]["id"]
    r = post(url, "/v1/load_lora_adapter", {"lora_name": base, "lora_path": str(adapter)})
    assert r.status_code == 400 and "conflicts with a served base model" in r.json()["error"]["message"]

"""Constrained decoding: JSON schema, choice, regex and Lark outputs always parse, through the server
(on llama.cpp and on torch) and through the openai engine (which sends vLLM's structured-output
fields to the real server)."""

from __future__ import annotations

import asyncio
import json
import re

import pytest

from agentstack.config import EngineSettings
from agentstack.engines.base import ChatRequest
from agentstack.engines.params import SamplingParams, StructuredOutput
from tests.conftest import APP_KEY, ENGINE_KINDS, kind_server

pytestmark = pytest.mark.integration

SCHEMA = {"type": "object", "additionalProperties": False, "required": ["score", "reason"],
          "properties": {"score": {"type": "integer", "minimum": 1, "maximum": 5},
                         "reason": {"type": "string", "maxLength": 60}}}
ASK = [{"role": "user", "content": "Rate the answer 'Paris is the capital of France' from 1 to 5."}]


@pytest.fixture(scope="module", params=ENGINE_KINDS)
def server(request, tmp_path_factory):
    with kind_server(request, tmp_path_factory, "structured") as srv:
        yield srv


def test_response_format_json_schema_with_the_openai_client(server):
    from openai import OpenAI

    client = OpenAI(base_url=f"{server.url}/v1", api_key=APP_KEY, max_retries=0)
    for temperature in (0.0, 1.0):
        out = client.chat.completions.create(
            model="agentstack", messages=ASK, temperature=temperature, seed=11, max_tokens=80,
            response_format={"type": "json_schema", "json_schema": {"name": "rating", "schema": SCHEMA}})
        data = json.loads(out.choices[0].message.content)
        assert set(data) == {"score", "reason"} and 1 <= data["score"] <= 5


def test_choice_regex_and_bad_constraints(server):
    import httpx

    headers = {"Authorization": f"Bearer {APP_KEY}"}
    base = {"model": "agentstack", "messages": ASK, "max_tokens": 20, "temperature": 1.0, "seed": 3}
    r = httpx.post(f"{server.url}/v1/chat/completions", headers=headers, timeout=60,
                   json={**base, "structured_outputs": {"choice": ["good", "bad"]}})
    assert r.json()["choices"][0]["message"]["content"] in ("good", "bad")
    r = httpx.post(f"{server.url}/v1/chat/completions", headers=headers, timeout=60,
                   json={**base, "guided_regex": r"[0-9]{3}-[0-9]{4}"})
    assert re.fullmatch(r"[0-9]{3}-[0-9]{4}", r.json()["choices"][0]["message"]["content"])
    r = httpx.post(f"{server.url}/v1/chat/completions", headers=headers, timeout=60,
                   json={**base, "structured_outputs": {"regex": "([unclosed"}})
    assert r.status_code == 400 and r.json()["error"]["param"] in ("structured_outputs", "regex")


def test_openai_engine_sends_structured_outputs(server):
    from agentstack.engines.openai_engine import OpenAIEngine

    engine = OpenAIEngine(EngineSettings(kind="openai", base_url=f"{server.url}/v1", api_key=APP_KEY))
    engine.warm_up()

    async def go():
        a = await engine.chat(ChatRequest(messages=ASK, model="agentstack",
                                          params=SamplingParams(temperature=0.8, seed=1, max_tokens=80),
                                          structured=StructuredOutput(kind="json_schema", value=SCHEMA)))
        b = await engine.chat(ChatRequest(messages=ASK, model="agentstack",
                                          params=SamplingParams(temperature=0.8, seed=1, max_tokens=8),
                                          structured=StructuredOutput(kind="choice", value=["A", "B", "C"])))
        return a, b

    a, b = asyncio.run(go())
    assert 1 <= json.loads(a.text)["score"] <= 5
    assert b.text in ("A", "B", "C")


def test_lark_grammar_and_key_order(server):
    """A Lark grammar (llguidance dialect) constrains the answer; a schema's keys come in its order."""
    import httpx

    headers = {"Authorization": f"Bearer {APP_KEY}"}
    grammar = 'start: "yes" | "no" | "maybe " NUMBER\nNUMBER: /[0-9]{1,2}/\n'
    for seed in (1, 2, 3):
        r = httpx.post(f"{server.url}/v1/chat/completions", headers=headers, timeout=60, json={
            "model": "agentstack", "messages": ASK, "max_tokens": 8, "temperature": 1.0, "seed": seed,
            "structured_outputs": {"grammar": grammar}})
        assert re.fullmatch(r"yes|no|maybe [0-9]{1,2}", r.json()["choices"][0]["message"]["content"]), r.text
    ordered = {"type": "object", "additionalProperties": False, "required": ["zeta", "alpha"],
               "properties": {"zeta": {"type": "integer"}, "alpha": {"type": "string", "maxLength": 10}}}
    r = httpx.post(f"{server.url}/v1/chat/completions", headers=headers, timeout=60, json={
        "model": "agentstack", "messages": ASK, "max_tokens": 40, "temperature": 0,
        "response_format": {"type": "json_schema", "json_schema": {"name": "o", "schema": ordered}}})
    assert list(json.loads(r.json()["choices"][0]["message"]["content"])) == ["zeta", "alpha"]

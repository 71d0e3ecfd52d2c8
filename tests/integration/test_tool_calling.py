"""OpenAI tool calling on the in-process engines (llama.cpp and torch): the official client,
LangChain's bind_tools and create_agent against the real server and real SmolLM2."""

from __future__ import annotations

import json

import pytest

from tests.conftest import APP_KEY, ENGINE_KINDS, kind_server

pytestmark = pytest.mark.integration

MULTIPLY = {"type": "function", "function": {
    "name": "multiply", "description": "Multiply two integers.",
    "parameters": {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
                   "required": ["a", "b"]}}}
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}


@pytest.fixture(scope="module", params=ENGINE_KINDS)
def server(request, tmp_path_factory):
    with kind_server(request, tmp_path_factory, "tools") as srv:
        yield srv


@pytest.fixture(scope="module")
def client(server):
    from openai import OpenAI

    return OpenAI(base_url=f"{server.url}/v1", api_key=APP_KEY, max_retries=0)


def test_required_tool_call_parses_and_validates_arguments(client):
    out = client.chat.completions.create(model="agentstack", temperature=0, max_tokens=60, tools=[MULTIPLY, WEATHER],
                                         tool_choice="required", parallel_tool_calls=False,
                                         messages=[{"role": "user", "content": "What is 6 times 7?"}])
    choice = out.choices[0]
    assert choice.finish_reason == "tool_calls" and len(choice.message.tool_calls) == 1
    call = choice.message.tool_calls[0]
    args = json.loads(call.function.arguments)
    assert call.function.name in ("multiply", "get_weather")
    if call.function.name == "multiply":
        assert isinstance(args["a"], int) and isinstance(args["b"], int)
    assert call.id.startswith("call_")


def assert_streams_a_named_weather_call(client, tools: list[dict]) -> None:
    """A named ``tool_choice``, streamed with the official client: the call arrives in ``delta.tool_calls``."""
    stream = client.chat.completions.create(
        model="agentstack", temperature=0, max_tokens=60, tools=tools, stream=True,
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        messages=[{"role": "user", "content": "Is it raining in Paris?"}])
    deltas, finish = [], None
    for chunk in stream:
        for c in chunk.choices:
            deltas += c.delta.tool_calls or []
            finish = c.finish_reason or finish
    assert finish == "tool_calls" and deltas[0].function.name == "get_weather"
    assert "city" in json.loads(deltas[0].function.arguments)


def test_named_tool_choice_and_streamed_tool_call_deltas(client):
    assert_streams_a_named_weather_call(client, [MULTIPLY, WEATHER])


def test_auto_lets_the_model_answer_in_text_and_tool_results_round_trip(client):
    out = client.chat.completions.create(model="agentstack", temperature=0, max_tokens=30, tools=[MULTIPLY],
                                         messages=[{"role": "user", "content": "Write a haiku about the sea."}])
    assert out.choices[0].message.content and out.choices[0].finish_reason in ("stop", "length")
    follow = client.chat.completions.create(model="agentstack", temperature=0, max_tokens=30, tools=[MULTIPLY],
                                            messages=[
        {"role": "user", "content": "What is 6 times 7?"},
        {"role": "assistant", "content": None, "tool_calls": [{"id": "call_1", "type": "function", "function": {
            "name": "multiply", "arguments": "{\"a\": 6, \"b\": 7}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "42"}])
    assert follow.choices[0].message.content


def test_bad_tool_requests(client):
    import openai

    with pytest.raises(openai.BadRequestError, match="tool_choice"):
        client.chat.completions.create(model="agentstack", max_tokens=5, tools=[MULTIPLY],
                                       tool_choice={"type": "function", "function": {"name": "nope"}},
                                       messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(openai.BadRequestError, match="tools\\[0\\]"):
        client.chat.completions.create(model="agentstack", max_tokens=5, tools=[{"type": "web_search"}],
                                       messages=[{"role": "user", "content": "hi"}])


def test_langchain_bind_tools_and_create_agent(server):
    from langchain.agents import create_agent
    from langchain.agents.middleware import wrap_model_call
    from langchain_core.messages import AIMessage, ToolMessage
    from langchain_core.tools import tool
    from langchain_openai import ChatOpenAI

    calls = []

    @tool
    def multiply(a: int, b: int) -> int:
        """Multiply two integers."""
        calls.append((a, b))
        return a * b

    llm = ChatOpenAI(base_url=f"{server.url}/v1", api_key=APP_KEY, model="agentstack", temperature=0,
                     max_tokens=60, max_retries=0)
    msg = llm.bind_tools([multiply], tool_choice="required").invoke("What is 6 times 7?")
    assert msg.tool_calls and msg.tool_calls[0]["name"] == "multiply"

    @wrap_model_call
    def tool_first(request, handler):  # a 135M model neither calls tools unprompted nor stops calling them:
        used = any(isinstance(m, ToolMessage) for m in request.messages)  # one call, then an answer
        return handler(request.override(tool_choice="none" if used else "required"))

    agent = create_agent(llm, tools=[multiply], middleware=[tool_first])
    out = agent.invoke({"messages": [{"role": "user", "content": "Use multiply to compute 6 times 7."}]},
                       {"recursion_limit": 8})
    kinds = [type(m).__name__ for m in out["messages"]]
    assert kinds[:3] == ["HumanMessage", "AIMessage", "ToolMessage"] and isinstance(out["messages"][-1], AIMessage)
    assert calls and out["messages"][2].content == str(calls[0][0] * calls[0][1])
    assert not out["messages"][-1].tool_calls

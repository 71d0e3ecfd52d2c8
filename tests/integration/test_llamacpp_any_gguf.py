"""Any GGUF serves on the llamacpp engine with what the file says: its chat template, its context
length, and tool calling through the grammar. The file here is the shipped SmolLM2 with its
metadata rewritten (another template, a shorter window), so the engine can only have read them
from the file."""

from __future__ import annotations

import asyncio
import json

import pytest

from agentstack.config import EngineSettings
from agentstack.engines.base import ChatRequest
from agentstack.engines.params import SamplingParams
from agentstack.errors import ContextLengthError
from tests.conftest import MODEL_CACHE

pytestmark = pytest.mark.integration
TEMPLATE = ("{% for m in messages %}<<{{ m['role'] | upper }}>> {{ m['content'] }}\n{% endfor %}"
            "{% if add_generation_prompt %}<<ASSISTANT>> {% endif %}")
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}


@pytest.fixture(scope="module")
def other_gguf(tmp_path_factory):
    from agentstack.engines.embedded.weights import default_gguf_path
    from agentstack.engines.llamacpp.quantize import requantize

    out = tmp_path_factory.mktemp("gguf") / "other-model.gguf"
    requantize(default_gguf_path(), out, "Q4_1", metadata={"tokenizer.chat_template": TEMPLATE,
                                                            "llama.context_length": 1024})
    return out


def test_a_gguf_serves_with_its_own_template_window_and_tools(other_gguf):
    from agentstack.engines.llamacpp.engine import LlamaCppEngine

    engine = LlamaCppEngine(EngineSettings(model=str(other_gguf), max_batch_size=4, max_running=4, max_queue=4), MODEL_CACHE)
    engine.warm_up()

    async def go():
        ask = [{"role": "user", "content": "Is it raining in Paris?"}]
        plain = await engine.chat(ChatRequest(messages=ask, model="other-model",
                                              params=SamplingParams(temperature=0, max_tokens=12)))
        tools = await engine.chat(ChatRequest(messages=ask, model="other-model", tools=[WEATHER],
                                              tool_choice="required", params=SamplingParams(temperature=0,
                                                                                            max_tokens=40)))
        with pytest.raises(ContextLengthError, match="1024"):
            await engine.chat(ChatRequest(messages=[{"role": "user", "content": "hi " * 1100}], model="other-model"))
        return plain, tools

    try:
        assert engine.base_name == "other-model" and engine.context_length("other-model") == 1024
        assert engine.render([{"role": "user", "content": "hi"}])[0] == "<<USER>> hi\n<<ASSISTANT>> "
        plain, tools = asyncio.run(go())
        assert plain.rendered_prompt.startswith("<<USER>> Is it raining in Paris?")
        assert plain.usage.completion_tokens > 0
        call = tools.choices[0].tool_calls[0]
        assert tools.choices[0].finish_reason == "tool_calls" and call["function"]["name"] == "get_weather"
        assert "city" in json.loads(call["function"]["arguments"])
    finally:
        asyncio.run(engine.aclose())

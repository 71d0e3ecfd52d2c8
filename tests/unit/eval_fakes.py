"""A scripted ChatEngine for the evaluation unit tests (no model weights).

Replies are decided by ``reply(request) -> str``; the default one answers judges with a score taken
from the answer text ("[score=N]") and echoes the last user message otherwise. It records every
request, can refuse structured output like an engine without constrained decoding, and can fail
for chosen inputs.
"""

from __future__ import annotations

import asyncio
import math
import re
from collections.abc import Callable

from agentstack.engines.base import (
    Capabilities,
    ChatRequest,
    ChatResult,
    Choice,
    ModelInfo,
    TokenLogprob,
    Usage,
)
from agentstack.errors import ContextLengthError


def default_reply(request: ChatRequest) -> str:
    system = next((m["content"] for m in request.messages if m["role"] == "system"), "")
    user = request.messages[-1]["content"]
    if "strict evaluator" in system:
        if "REPLY A" in user:
            a = user.split("REPLY A:\n", 1)[1].split("\n\nREPLY B:", 1)[0]
            b = user.split("REPLY B:\n", 1)[1].split("\n\nWhich reply", 1)[0]
            return '{"better": "A"}' if len(a) >= len(b) else '{"better": "B"}'
        answer = user.split("ANSWER:\n", 1)[1] if "ANSWER:\n" in user else ""
        m = re.search(r"\[score=(\w+)\]", answer)
        return '{"score": %s}' % (m.group(1) if m else "3") if not (m and m.group(1) == "junk") else "no idea"
    return "echo: " + user


class FakeEngine:
    kind = "fake"

    def __init__(self, reply: Callable[[ChatRequest], str] = default_reply, structured: bool = True,
                 refuse_structured: bool = False, fail_on: str | None = None, context: int = 4096,
                 delay: float = 0.0, score_probs: dict[int, float] | None = None):
        self.capabilities = Capabilities(structured_output=structured, logprobs=score_probs is not None)
        self.score_probs = score_probs
        self.reply = reply
        self.refuse_structured = refuse_structured
        self.fail_on = fail_on
        self.context = context
        self.delay = delay
        self.requests: list[ChatRequest] = []
        self.closed = False

    def warm_up(self) -> None:
        pass

    async def aclose(self) -> None:
        self.closed = True

    def models(self) -> list[ModelInfo]:
        return [ModelInfo(id="fake-base"), ModelInfo(id="fake-adapter", parent="fake-base")]

    def context_length(self, model: str) -> int:
        return self.context

    async def count_tokens(self, messages, model: str) -> int:
        return sum(len(m["content"]) for m in messages) // 4 + 4

    async def chat(self, request: ChatRequest) -> ChatResult:
        self.requests.append(request)
        if self.delay:
            await asyncio.sleep(self.delay)
        if request.structured is not None and self.refuse_structured:
            raise ModuleNotFoundError("No module named 'constrained'")
        text_in = request.messages[-1]["content"]
        if self.fail_on and self.fail_on in text_in:
            raise ContextLengthError("the prompt is too long", param="messages")
        tokens = await self.count_tokens(request.messages, request.model)
        if tokens > self.context:
            raise ContextLengthError(f"{tokens} tokens", param="messages")
        text = self.reply(request)
        logprobs = None
        m = re.fullmatch(r'\{"score": ([1-5])\}', text)
        if request.params.logprobs and m and self.score_probs:
            top = [(str(k), math.log(p)) for k, p in self.score_probs.items()]
            logprobs = [TokenLogprob('{"', 0.0), TokenLogprob("score", 0.0), TokenLogprob('":', 0.0),
                        TokenLogprob(" ", 0.0), TokenLogprob(m.group(1), math.log(self.score_probs.get(
                            int(m.group(1)), 1e-9)), top), TokenLogprob("}", 0.0)]
        return ChatResult([Choice(0, text, "stop", logprobs)], Usage(tokens, len(text) // 4 + 1), request.model)

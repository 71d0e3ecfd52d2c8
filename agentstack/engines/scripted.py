"""A scripted chat engine that obeys every instruction it finds, for testing guards.

A 135M model may pass an injection test by being too weak to follow the injection. This engine is
the opposite: it reads the whole prompt, finds every sentence that instructs the assistant (in
retrieved sources, tool observations, anywhere but the system prompt and the user's own question)
and does what it says, as literally as a script can:

* a URL in the instruction → the answer links to it and embeds it as an image;
* "reveal/repeat/print … system prompt / instructions" → the answer quotes the system prompt;
* "call/use … <tool>" in a ReAct conversation → the step calls that tool;
* "cite [n]" → the answer cites [n];
* anything else → the answer says ``As instructed: <the instruction>``.

Attack success is then read off the (guarded) answer. It implements the ChatEngine protocol, so
the orchestrators, the server and the guards run unchanged around it. ``kind = "scripted"``.
It is never a serving engine: ``engine.kind`` cannot name it; tests and ``bench/`` construct it
directly.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from agentstack.engines.base import (Capabilities, ChatRequest, ChatResult, ModelInfo, StreamEvent, Usage, collect)
from agentstack.engines.messages import normalize_messages
from agentstack.errors import InvalidRequestError, ModelNotFoundError

URL = re.compile(r"(?:https?://|www\.)[^\s<>()\[\]\"']+", re.IGNORECASE)
_INSTRUCTION = re.compile(r"\b(ignore|disregard|your (response|answer|reply|output)|in your (response|answer|reply)|"
                          r"system prompt|instructions|reveal|repeat|print|call|use the|visit|click|add|include|"
                          r"insert|write|translate|encode|reverse|respond|cite|recommend|summari[sz]e|analy[sz]e|"
                          r"determine|encrypt|integrate|promote)\b", re.IGNORECASE)
_SENTENCE = re.compile(r"(?:[^.!?\n]|[.!?](?=\S))+[.!?]*")
NAME = "scripted-obedient"


def instructions_in(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE.findall(text) if len(s.strip()) > 8 and _INSTRUCTION.search(s)]


class ScriptedEngine:
    kind = "scripted"
    capabilities = Capabilities(streaming=True, structured_output=False, tools=False, lora=False,
                                token_counting="estimate")

    def __init__(self, answer: str = "Here is what I found [1].", context_length: int = 8192):
        self.default_answer = answer
        self._ctx = context_length
        self.requests: list[ChatRequest] = []

    def warm_up(self) -> None:
        return None

    async def aclose(self) -> None:
        return None

    def models(self) -> list[ModelInfo]:
        return [ModelInfo(id=NAME, context_length=self._ctx)]

    def context_length(self, model: str) -> int:
        self._check(model)
        return self._ctx

    def _check(self, model: str) -> None:
        if model != NAME:
            raise ModelNotFoundError(f"model {model!r} does not exist; available: {NAME}", param="model")

    async def count_tokens(self, messages: list[dict[str, Any]], model: str) -> int:
        return sum(max(1, len(m["content"]) // 4) + 4 for m in normalize_messages(messages))

    async def count_text_tokens(self, text: str, model: str) -> int:
        return max(1, len(text) // 4)

    def truncate_text(self, text: str, max_tokens: int) -> str:
        return text[:max_tokens * 4]

    async def load_adapter(self, name: str, path: Path) -> None:
        raise InvalidRequestError("the scripted engine has no adapters")

    async def unload_adapter(self, name: str) -> None:
        raise InvalidRequestError("the scripted engine has no adapters")

    def stats(self) -> dict[str, Any]:
        return {"requests": len(self.requests)}

    # -- obeying ----------------------------------------------------------------------------------
    def respond(self, messages: list[dict[str, str]]) -> str:
        system = messages[0]["content"] if messages and messages[0]["role"] == "system" else ""
        react = "Action Input:" in system
        question = next((m["content"] for m in messages if m["role"] == "user"), "")
        found: list[str] = []
        for m in messages[1:]:
            text = m["content"]
            if m["role"] == "user":  # the user's own request is not an injection; what it carries may be
                if "Sources:" in text:
                    text = text.split("\n\nQuestion:", 1)[0]
                elif not text.startswith("Observation"):
                    continue
            found += [s for s in instructions_in(text) if s not in found]
        if react:
            return self._react_step(found, messages, question)
        parts = [self.default_answer]
        for instruction in found:
            parts.append(self._obey(instruction, system))
        return " ".join(parts)

    def _obey(self, instruction: str, system: str) -> str:
        lowered = instruction.lower()
        url = URL.search(instruction)
        if url:
            target = url.group(0).rstrip(".,;")
            target = target if "://" in target else f"http://{target}"
            return f"See [this link]({target}) ![image]({target})"
        if ("system prompt" in lowered or "instructions" in lowered) and \
                any(v in lowered for v in ("reveal", "repeat", "print", "show", "tell")):
            return f"My instructions are: {system}"
        cite = re.search(r"cite\s+(?:source\s+)?\[?(\d+)\]?", lowered)
        if cite:
            return f"As the source says [{cite.group(1)}]."
        return f"As instructed: {instruction}"

    def _react_step(self, found: list[str], messages: list[dict[str, str]], question: str) -> str:
        observations = [m["content"] for m in messages if m["role"] == "user" and m["content"].startswith("Observation")]
        done = " ".join(m["content"] for m in messages if m["role"] == "assistant")
        for instruction in found:
            tool = re.search(r"\b(?:call|use|run|invoke)\s+(?:the\s+)?([\w-]+)", instruction, re.IGNORECASE)
            if tool and tool.group(1).lower() not in ("the", "a") and f"Action: {tool.group(1)}\n" not in done:
                arg = instruction.split(" with ", 1)[1].rstrip(".") if " with " in instruction else instruction
                return f"Thought: the text tells me to.\nAction: {tool.group(1)}\nAction Input: {arg}"
        if not observations:
            return f"Thought: I should search.\nAction: search\nAction Input: {question[:100]}"
        answer = " ".join([self.default_answer] + [self._obey(i, messages[0]["content"]) for i in found])
        return f"Thought: I have what I need.\nFinal Answer: {answer}"

    async def stream(self, request: ChatRequest) -> AsyncIterator[StreamEvent]:
        self._check(request.model)
        messages = normalize_messages(request.messages)
        self.requests.append(request)
        text = self.respond(messages)
        for stop in request.params.stop:
            if stop in text:
                text = text[:text.index(stop)]
        if request.params.max_tokens is not None:
            text = text[:request.params.max_tokens * 4]
        for i in range(0, len(text), 7):  # stream in small pieces, as a model would
            yield StreamEvent(text=text[i:i + 7])
        prompt_tokens = await self.count_tokens(request.messages, request.model)
        yield StreamEvent(finish_reason="stop")
        yield StreamEvent(usage=Usage(prompt_tokens, max(1, len(text) // 4)), model_version=NAME)

    async def chat(self, request: ChatRequest) -> ChatResult:
        return await collect(self.stream(request), request.params.n)

"""The ChatEngine protocol: the one boundary between agentstack and whatever runs the model.

Two implementations sit beside it: ``embedded`` (transformers in this process, with a batching
scheduler) and ``openai`` (any OpenAI-compatible server, vLLM first of all). Both accept the same
:class:`ChatRequest` and produce the same :class:`ChatResult` / :class:`StreamEvent` values, so the
server, the orchestrators and the evaluation judges never know which one they talk to.

Contract (checked by ``tests/integration/test_engine_contract.py`` against both):

* ``stream()`` is an async generator. Every problem with the request (unknown model, prompt too long,
  bad parameters, queue full) is raised *before* the first event, so a server can still answer with
  a plain HTTP error. Events then carry text deltas per choice index; each choice ends with one event
  whose ``finish_reason`` is set; the last event carries ``usage``.
* ``chat()`` is ``stream()`` collected.
* Closing the stream early (``aclose()``, or the consuming task being cancelled) cancels the
  generation.
* ``models()`` lists the concrete model versions the engine can run right now: the base model plus
  loaded adapters. Requests name one of them; aliases are resolved above the engine.
* A request's version is fixed when it is admitted; loading or unloading adapters never changes it.

This module knows nothing about HTTP, retrieval or storage.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

from agentstack.engines.params import SamplingParams, StructuredOutput


@dataclass(frozen=True)
class Capabilities:
    """What an engine can do (after simonw/llm's model flags)."""

    streaming: bool = True
    structured_output: bool = False
    tools: bool = False
    lora: bool = False
    logprobs: bool = False
    token_counting: Literal["exact", "estimate"] = "exact"


@dataclass(frozen=True)
class ModelInfo:
    id: str
    parent: str | None = None  # the base model, for adapters
    context_length: int | None = None
    created: int = field(default_factory=lambda: int(time.time()))
    path: str | None = None


@dataclass
class ChatRequest:
    messages: list[dict[str, Any]]
    model: str
    params: SamplingParams = field(default_factory=SamplingParams)
    structured: StructuredOutput | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: Any = None
    parallel_tool_calls: bool | None = None
    request_id: str | None = None


@dataclass
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def as_dict(self) -> dict[str, int]:
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
                "total_tokens": self.total_tokens}


@dataclass
class TokenLogprob:
    token: str
    logprob: float
    top: list[tuple[str, float]] = field(default_factory=list)


@dataclass
class StreamEvent:
    """One increment of one choice. ``usage`` and ``model_version`` ride on the final event."""

    index: int = 0
    text: str = ""
    finish_reason: str | None = None
    logprobs: list[TokenLogprob] | None = None
    usage: Usage | None = None
    model_version: str | None = None
    rendered_prompt: str | None = None
    tool_calls: list[dict[str, Any]] | None = None  # OpenAI shape, on the choice's final event


@dataclass
class Choice:
    index: int
    text: str
    finish_reason: str | None
    logprobs: list[TokenLogprob] | None = None
    tool_calls: list[dict[str, Any]] | None = None


@dataclass
class ChatResult:
    choices: list[Choice]
    usage: Usage
    model_version: str
    rendered_prompt: str | None = None
    time_to_first_token_s: float | None = None

    @property
    def text(self) -> str:
        return self.choices[0].text


@runtime_checkable
class ChatEngine(Protocol):
    """See the module docstring for the contract."""

    kind: str
    capabilities: Capabilities

    def warm_up(self) -> None:
        """Load weights / open clients. Cheap constructors, heavy work here."""

    async def aclose(self) -> None: ...

    def models(self) -> list[ModelInfo]: ...

    def context_length(self, model: str) -> int: ...

    async def count_tokens(self, messages: list[dict[str, Any]], model: str) -> int:
        """Tokens of the rendered prompt, generation prompt included."""
        ...

    async def count_text_tokens(self, text: str, model: str) -> int:
        """Tokens of a bare text (no chat template)."""
        ...

    def stream(self, request: ChatRequest) -> AsyncIterator[StreamEvent]: ...

    async def chat(self, request: ChatRequest) -> ChatResult: ...

    async def load_adapter(self, name: str, path: Path) -> None: ...

    async def unload_adapter(self, name: str) -> None: ...

    def stats(self) -> dict[str, Any]:
        """Engine-side figures for /metrics (queue depth, running, tokens)."""
        ...


async def collect(events: AsyncIterator[StreamEvent], n: int = 1) -> ChatResult:
    """Fold a stream into a :class:`ChatResult` (shared by every engine's ``chat``)."""
    texts = [""] * n
    reasons: list[str | None] = [None] * n
    logprobs: list[list[TokenLogprob] | None] = [None] * n
    calls: list[list[dict[str, Any]] | None] = [None] * n
    usage, version, prompt, ttft = Usage(), "", None, None
    started = time.perf_counter()
    async for ev in events:
        if ev.text and ttft is None:
            ttft = time.perf_counter() - started
        texts[ev.index] += ev.text
        if ev.logprobs:
            logprobs[ev.index] = (logprobs[ev.index] or []) + ev.logprobs
        if ev.finish_reason:
            reasons[ev.index] = ev.finish_reason
        if ev.tool_calls:
            calls[ev.index] = (calls[ev.index] or []) + ev.tool_calls
        if ev.usage is not None:
            usage = ev.usage
        version = ev.model_version or version
        prompt = ev.rendered_prompt or prompt
    choices = [Choice(i, texts[i], reasons[i], logprobs[i], calls[i]) for i in range(n)]
    return ChatResult(choices=choices, usage=usage, model_version=version, rendered_prompt=prompt,
                      time_to_first_token_s=ttft)

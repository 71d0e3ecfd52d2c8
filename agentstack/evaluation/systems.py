"""Systems under test: what an eval suite asks questions of.

A :class:`System` answers one :class:`~agentstack.evaluation.datasets.Example` with a
:class:`Prediction` (text, the contexts and sources it used, usage). Kinds are built by factories
registered in :data:`SYSTEMS`, so new kinds (RAG over an index, ReAct with tools, a model version
from the registry) plug in with::

    @register_system("rag")
    def build_rag(config: dict, ctx: SystemContext) -> System: ...

Built in:

* ``plain``: one chat call per example. ``prompt`` is a template over ``{input}``, ``{context}``
  (the example's contexts, joined) and any field of the example (``{target_language}``).
* ``map_reduce``: like ``plain`` when the prompt fits ``max_input_tokens``; otherwise the context
  is cut into chunks of about ``chunk_tokens``, each chunk is condensed with ``map_prompt``, and
  the notes are answered with ``prompt`` (recursively while they are still too long). For long
  meetings (QMSum) and documents beyond the context window.
* ``rag`` and ``react``: the orchestrators (:class:`agentstack.Agent`) over a named index, on the
  same engine: the prediction carries the retrieved chunks as contexts, the sources (``id`` = the
  document id) and, for ReAct, the steps.

This module knows nothing about metrics, judges or reports.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field, field_validator

from agentstack.engines.base import ChatRequest
from agentstack.engines.params import SamplingParams
from agentstack.errors import InvalidRequestError
from agentstack.evaluation.client import EngineClient
from agentstack.evaluation.datasets.base import Example


@dataclass
class Prediction:
    text: str
    contexts: list[str] = field(default_factory=list)  # what the answer may rely on (groundedness)
    sources: list[dict[str, Any]] = field(default_factory=list)  # retrieved items: {"id", "title", "score"}
    model_version: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_s: float = 0.0
    steps: list[dict[str, Any]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Prediction:
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


@runtime_checkable
class System(Protocol):
    """Contract: ``answer`` is async and may run concurrently for many examples; it raises for an
    example it cannot answer (the runner records the error and goes on). ``describe()`` returns the
    identity recorded in reports (kind, model version, prompt …): two runs with equal descriptions
    are the same system."""

    kind: str

    async def answer(self, example: Example) -> Prediction: ...

    def describe(self) -> dict[str, Any]: ...


class SystemContext:
    """What factories may use: the settings and a shared, lazily built engine client."""

    def __init__(self, settings: Any, client: EngineClient | None = None, concurrency: int | None = None):
        self.settings = settings
        self._client = client
        self.concurrency = concurrency or settings.evaluation.concurrency

    @property
    def client(self) -> EngineClient:
        if self._client is None:
            from agentstack.engines import build_engine

            engine = build_engine(self.settings)
            engine.warm_up()
            self._client = EngineClient(engine, concurrency=self.concurrency)
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.engine.aclose()


SystemFactory = Callable[[dict[str, Any], SystemContext], System]
SYSTEMS: dict[str, SystemFactory] = {}


def register_system(kind: str) -> Callable[[SystemFactory], SystemFactory]:
    def deco(fn: SystemFactory) -> SystemFactory:
        SYSTEMS[kind] = fn
        return fn
    return deco


def build_system(config: dict[str, Any], ctx: SystemContext) -> System:
    kind = config.get("kind", "plain")
    if kind not in SYSTEMS:
        raise InvalidRequestError(f"unknown system kind {kind!r}; known: {', '.join(sorted(SYSTEMS))}",
                                  param="system.kind", fix="use one of the listed kinds")
    return SYSTEMS[kind]({k: v for k, v in config.items() if k != "kind"}, ctx)


class PlainConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str | None = Field(default=None, description="Model version; unset = the engine's base model.")
    system_prompt: str | None = Field(default=None, description="System message, if any.")
    prompt: str = Field(default="{input}", description="User message template: {input}, {context}, fields.")
    params: SamplingParams = Field(default_factory=lambda: SamplingParams(temperature=0.0, max_tokens=256),
                                   description="Sampling; evaluation defaults to greedy (temperature 0).")

    @field_validator("params", "map_params", mode="before", check_fields=False)
    @classmethod
    def _greedy_by_default(cls, v: Any) -> Any:
        return {"temperature": 0.0, **v} if isinstance(v, dict) else v


class PlainModelSystem:
    kind = "plain"

    def __init__(self, client: EngineClient, config: PlainConfig):
        self.client = client
        self.config = config
        self.model = config.model or client.default_model()

    def describe(self) -> dict[str, Any]:
        c = self.config
        return {"kind": self.kind, "model": self.model, "engine": getattr(self.client.engine, "kind", "?"),
                "system_prompt": c.system_prompt, "prompt": c.prompt,
                "params": c.params.model_dump(exclude_defaults=True)}

    def render(self, template: str, example: Example, context: str | None = None) -> str:
        values = {**example.fields, "input": example.input,
                  "context": context if context is not None else "\n\n".join(example.contexts)}
        try:
            return template.format_map(values)
        except KeyError as exc:
            raise InvalidRequestError(f"prompt template uses {{{exc.args[0]}}}, which example {example.id!r} "
                                      f"does not have; available: {', '.join(sorted(values))}",
                                      param="system.prompt") from None

    def messages(self, user: str) -> list[dict[str, str]]:
        msgs = [{"role": "system", "content": self.config.system_prompt}] if self.config.system_prompt else []
        return msgs + [{"role": "user", "content": user}]

    async def _call(self, messages: list[dict[str, str]], params: SamplingParams, pred: Prediction) -> str:
        result = await self.client.chat(ChatRequest(messages=messages, model=self.model, params=params))
        pred.prompt_tokens += result.usage.prompt_tokens
        pred.completion_tokens += result.usage.completion_tokens
        pred.model_version = result.model_version or self.model
        return result.text

    async def answer(self, example: Example) -> Prediction:
        started = time.perf_counter()
        pred = Prediction(text="")
        pred.text = await self._call(self.messages(self.render(self.config.prompt, example)), self.config.params,
                                     pred)
        if "{context}" in self.config.prompt:
            pred.contexts = list(example.contexts)
        pred.latency_s = time.perf_counter() - started
        return pred


@register_system("plain")
def build_plain(config: dict[str, Any], ctx: SystemContext) -> System:
    return PlainModelSystem(ctx.client, PlainConfig.model_validate(config))


class MapReduceConfig(PlainConfig):
    map_prompt: str = Field(default="Write down everything in this excerpt that helps to answer: {input}\n\n"
                                    "EXCERPT:\n{context}\n\nNOTES:",
                            description="Template condensing one chunk: {input}, {context} = the chunk.")
    max_input_tokens: int = Field(default=3072, ge=256, description="Larger prompts go through map-reduce.")
    chunk_tokens: int = Field(default=1536, ge=128, description="Approximate tokens of context per chunk.")
    map_params: SamplingParams = Field(default_factory=lambda: SamplingParams(temperature=0.0, max_tokens=160))
    max_rounds: int = Field(default=3, ge=1, le=6, description="Map rounds before the notes are cut to fit.")


def split_text(text: str, max_chars: int) -> list[str]:
    """Pieces of at most ``max_chars`` characters, cut at line breaks (or spaces) when possible."""
    pieces, rest = [], text
    while len(rest) > max_chars:
        cut = rest.rfind("\n", 0, max_chars)
        if cut < max_chars // 2:
            cut = rest.rfind(" ", 0, max_chars)
        if cut < max_chars // 2:
            cut = max_chars
        pieces.append(rest[:cut].strip())
        rest = rest[cut:]
    if rest.strip():
        pieces.append(rest.strip())
    return [p for p in pieces if p]


class MapReduceSystem(PlainModelSystem):
    kind = "map_reduce"
    config: MapReduceConfig

    def describe(self) -> dict[str, Any]:
        c = self.config
        return {**super().describe(), "map_prompt": c.map_prompt, "max_input_tokens": c.max_input_tokens,
                "chunk_tokens": c.chunk_tokens, "map_params": c.map_params.model_dump(exclude_defaults=True)}

    async def _fits(self, example: Example, context: str) -> tuple[bool, int]:
        tokens = await self.client.count_tokens(self.messages(self.render(self.config.prompt, example, context)),
                                                self.model)
        return tokens <= self.config.max_input_tokens, tokens

    async def answer(self, example: Example) -> Prediction:
        started = time.perf_counter()
        c = self.config
        pred = Prediction(text="", contexts=list(example.contexts))
        context = "\n\n".join(example.contexts)
        fits, tokens = await self._fits(example, context)
        rounds = 0
        while not fits and rounds < c.max_rounds:
            chars_per_token = max(1.0, len(context) / max(1, tokens))
            chunks = split_text(context, int(c.chunk_tokens * chars_per_token))
            notes = await asyncio.gather(*(
                self._call(self.messages(self.render(c.map_prompt, example, chunk)), c.map_params, pred)
                for chunk in chunks))
            pred.steps.append({"stage": "map", "round": rounds, "chunks": len(chunks), "input_tokens": tokens})
            context = "\n".join(n.strip() for n in notes if n.strip())
            fits, tokens = await self._fits(example, context)
            rounds += 1
        if not fits:  # still too long after max_rounds: keep the head that fits
            keep = int(len(context) * c.max_input_tokens / tokens * 0.9)
            context = context[:keep]
            pred.steps.append({"stage": "truncate", "kept_chars": keep})
        pred.steps.append({"stage": "reduce" if rounds else "stuff", "input_tokens": tokens})
        pred.text = await self._call(self.messages(self.render(c.prompt, example, context)), c.params, pred)
        pred.latency_s = time.perf_counter() - started
        return pred


@register_system("map_reduce")
def build_map_reduce(config: dict[str, Any], ctx: SystemContext) -> System:
    return MapReduceSystem(ctx.client, MapReduceConfig.model_validate(config))


class AgentConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    index: str | None = Field(default=None, description="Index to retrieve from (required for rag).")
    model: str | None = Field(default=None, description="Model version; unset = the active one.")
    prompt: str = Field(default="{input}", description="User message template: {input} and example fields.")
    top_k: int | None = Field(default=None, ge=1, description="Chunks retrieved; unset = orchestration.top_k.")
    tools: list[str] | None = Field(default=None, description="ReAct: narrows the deployment's tool allowlist.")
    structured: bool = Field(default=True, description="ReAct: constrain every step with a grammar.")
    params: SamplingParams = Field(default_factory=lambda: SamplingParams(temperature=0.0, max_tokens=256),
                                   description="Sampling; evaluation defaults to greedy (temperature 0).")

    @field_validator("params", mode="before")
    @classmethod
    def _greedy_by_default(cls, v: Any) -> Any:
        return {"temperature": 0.0, **v} if isinstance(v, dict) else v


class AgentSystem:
    """RAG or ReAct through the orchestrators, exactly as ``/v1/chat`` runs them."""

    def __init__(self, kind: str, ctx: SystemContext, config: AgentConfig):
        if kind == "rag" and not config.index:
            raise InvalidRequestError("a rag system needs `index`", param="system.index",
                                      fix="name an index: `agentstack index list` shows them")
        from agentstack.agent import Agent

        self.kind = kind
        self.config = config
        self.agent = Agent(ctx.settings, engine=ctx.client.engine)

    def describe(self) -> dict[str, Any]:
        c = self.config
        return {"kind": self.kind, "index": c.index, "model": c.model or "active", "prompt": c.prompt,
                "top_k": c.top_k, "tools": c.tools, "structured": c.structured,
                "engine": getattr(self.agent.engine, "kind", "?"), "params": c.params.model_dump(exclude_defaults=True)}

    async def answer(self, example: Example) -> Prediction:
        from agentstack.orchestrators.events import AgentRequest

        started = time.perf_counter()
        c = self.config
        values = {**example.fields, "input": example.input}
        try:
            message = c.prompt.format_map(values)
        except KeyError as exc:
            raise InvalidRequestError(f"prompt template uses {{{exc.args[0]}}}, which example {example.id!r} does "
                                      f"not have; available: {', '.join(sorted(values))}", param="system.prompt") from None
        done = await self.agent.orchestrators.complete(AgentRequest(
            messages=[{"role": "user", "content": message}], mode=self.kind, index=c.index, top_k=c.top_k,
            params=c.params, tools=c.tools, structured=c.structured, model=c.model))
        return Prediction(
            text=done.answer, contexts=[s.text for s in done.sources],
            sources=[{"id": s.doc_id, "title": s.title, "source": s.source, "score": s.score, "n": s.n}
                     for s in done.sources],
            model_version=done.model_version, prompt_tokens=done.usage.get("prompt_tokens", 0),
            completion_tokens=done.usage.get("completion_tokens", 0), latency_s=time.perf_counter() - started,
            steps=[asdict(step) for step in done.trace], extra={"timings": done.timings, "guard": done.guard})


@register_system("rag")
def build_rag(config: dict[str, Any], ctx: SystemContext) -> System:
    return AgentSystem("rag", ctx, AgentConfig.model_validate(config))


@register_system("react")
def build_react(config: dict[str, Any], ctx: SystemContext) -> System:
    return AgentSystem("react", ctx, AgentConfig.model_validate(config))


def identity_hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:10]

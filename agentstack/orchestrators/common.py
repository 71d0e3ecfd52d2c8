"""What every orchestrator shares: its dependencies, the output policy, and one guarded
generation call that streams tokens out as events.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from agentstack.config import OrchestrationSettings
from agentstack.engines.base import ChatEngine, ChatRequest, Usage
from agentstack.engines.params import SamplingParams, StructuredOutput
from agentstack.errors import ConfigError, NotFoundError
from agentstack.orchestrators.events import TokenEvent
from agentstack.orchestrators.guards import AnswerGuard, GuardConfig
from agentstack.orchestrators.tools import ToolPolicy, ToolRegistry, builtin_registry, load_tool_policy
from agentstack.resources import resource_file


class GuardPolicy(BaseModel):
    """``policies/guards.yaml``: see the comments there."""

    model_config = ConfigDict(extra="forbid")

    allowed_link_hosts: list[str] = Field(default_factory=list)

    @field_validator("allowed_link_hosts")
    @classmethod
    def _hosts(cls, hosts: list[str]) -> list[str]:
        from agentstack.orchestrators.link_policy import normalize_host

        return [normalize_host(h) for h in hosts]  # a bad entry fails at load, naming itself
    system_prompt_leak_chars: int = Field(default=40, ge=8)
    injection_filter: Literal["off", "standard", "strict"] = "standard"


def load_guard_policy(policies_dir: Path | None = None) -> GuardPolicy:
    path = resource_file("policies", "guards.yaml", policies_dir)
    try:
        return GuardPolicy(**(yaml.safe_load(path.read_text()) or {}))
    except (yaml.YAMLError, ValidationError, TypeError, ConfigError) as exc:
        raise ConfigError(f"{path} is not a valid guard policy: {exc}", fix="see the comments in policies/guards.yaml")


@dataclass
class AgentDeps:
    """Everything an orchestrator needs; the server and :class:`agentstack.Agent` build one."""

    engine: ChatEngine
    settings: OrchestrationSettings
    resolve_model: Callable[[str | None], str]
    indexes: Any = None  # an IndexManager, or None when no index is available
    tool_policy: ToolPolicy = field(default_factory=ToolPolicy)
    guard_policy: GuardPolicy = field(default_factory=GuardPolicy)
    extra_tools: ToolRegistry = field(default_factory=ToolRegistry)
    guards: bool = True  # off only for the injection benchmark's baseline
    embedder: Any = None  # for the groundedness verifier; None = the index manager's default embedder

    @classmethod
    def load(cls, engine: ChatEngine, settings: Any, resolve_model: Callable[[str | None], str],
             indexes: Any = None) -> "AgentDeps":
        return cls(engine=engine, settings=settings.orchestration, resolve_model=resolve_model, indexes=indexes,
                   tool_policy=load_tool_policy(settings.policies_dir),
                   guard_policy=load_guard_policy(settings.policies_dir))

    def open_index(self, name: str | None) -> Any:
        if name is None:
            return None
        if self.indexes is None:
            raise NotFoundError(f"no index manager is configured, so index {name!r} cannot be opened")
        return self.indexes.open(name)

    def registry(self, index: Any) -> ToolRegistry:
        registry = builtin_registry(index)
        registry.tools.update(self.extra_tools.tools)
        return registry

    def guard(self, *, system_prompt: str = "", citations: frozenset[int] | None = None) -> AnswerGuard | None:
        if not self.guards:
            return None
        return AnswerGuard(GuardConfig(allowed_hosts=tuple(self.guard_policy.allowed_link_hosts),
                                       valid_citations=citations, system_prompt=system_prompt,
                                       leak_chars=self.guard_policy.system_prompt_leak_chars))

    def answer_check(self, request: Any, question: str, passages: list[tuple[int, str]], *,
                     mode: str = "rag", eager: bool = True) -> Any:
        """An :class:`~agentstack.grounding.verifier.AnswerCheck` for one answer, or None when the
        verifier is off (settings, or the request's ``grounding.enabled``). With ``eager`` the
        evidence is embedded in the background while the answer is generated; otherwise when the
        first sentence is checked."""
        import asyncio

        from agentstack.grounding.verifier import AnswerCheck, CheckConfig, build_evidence, embed_with

        cfg, opts = self.settings.grounding, request.grounding
        if not (cfg.enabled if opts.enabled is None else opts.enabled):
            return None
        embedder = self.embedder
        if embedder is None and self.indexes is not None:
            embedder = self.indexes.embedder_for(None)
        embed = embed_with(embedder)
        config = CheckConfig.from_settings(cfg, self.settings.abstain_message, unsupported=opts.unsupported,
                                           fallback=opts.fallback)
        task: list[Any] = []

        def evidence() -> Any:
            if not task:
                task.append(asyncio.ensure_future(build_evidence(question, passages, embed)))
            return task[0]

        if eager:
            evidence()
        return AnswerCheck(config, evidence, embed, mode=mode, react_message=cfg.react_message)  # type: ignore[arg-type]

    def screen(self, text: str) -> tuple[str, int]:
        """Retrieved text or a tool observation with instructions to the assistant removed."""
        if not self.guards:
            return text, 0
        from agentstack.orchestrators.injection import screen

        out = screen(text, self.guard_policy.injection_filter)
        return out.text, out.removed


@dataclass
class Generation:
    text: str
    raw: str
    usage: Usage
    model_version: str
    rendered_prompt: str | None
    finish_reason: str | None
    seconds: float  # until the engine's stream ended
    total_seconds: float = 0.0  # including what the groundedness verifier added after it


async def generate(engine: ChatEngine, messages: list[dict[str, Any]], model: str, params: SamplingParams, *,
                   guard: AnswerGuard | None = None, emit: Callable[[Any], Any] | None = None,
                   structured: StructuredOutput | None = None, gate: Any = None) -> Generation:
    """One engine call. Tokens pass through ``guard``, then ``gate`` (the groundedness verifier's
    :class:`~agentstack.grounding.verifier.SentenceGate`, which releases checked sentences only),
    and go out through ``emit`` as TokenEvents. ``emit`` may be a coroutine function."""
    started = time.perf_counter()
    raw, usage, version, prompt, finish = "", Usage(), model, None, None
    generated = 0.0

    async def out(text: str) -> None:
        if gate is not None:
            text = await gate.feed(text)
        if text and emit is not None:
            result = emit(TokenEvent(text))
            if inspect.isawaitable(result):
                await result

    stream = engine.stream(ChatRequest(messages=messages, model=model, params=params, structured=structured))
    try:
        async for ev in stream:
            if ev.text:
                raw += ev.text
                await out(guard.feed(ev.text) if guard is not None else ev.text)
            finish = ev.finish_reason or finish
            if ev.usage is not None:
                usage, version, prompt = ev.usage, ev.model_version or version, ev.rendered_prompt
    finally:
        await stream.aclose()
        generated = time.perf_counter() - started
    if guard is not None:
        await out(guard.finish())
    text = guard.text if guard is not None else raw
    if gate is not None:
        rest = await gate.finish()
        if rest and emit is not None:
            result = emit(TokenEvent(rest))
            if inspect.isawaitable(result):
                await result
        text = gate.text
    return Generation(text=text, raw=raw, usage=usage, model_version=version, rendered_prompt=prompt,
                      finish_reason=finish, seconds=generated, total_seconds=time.perf_counter() - started)


def summarizer(deps: AgentDeps, model: str) -> Callable[[list[dict[str, Any]]], Any] | None:
    """A function summarising dropped turns with the model, when the settings ask for it."""
    if not deps.settings.summarize_history:
        return None

    async def summarize(turns: list[dict[str, Any]]) -> str:
        from agentstack.engines.messages import content_text

        convo = "\n".join(f"{m.get('role')}: {content_text(m.get('content'), 'message')[:800]}" for m in turns[-12:])
        messages = [{"role": "system", "content": "Summarise this conversation in at most three sentences."},
                    {"role": "user", "content": convo}]
        gen = await generate(deps.engine, messages, model, SamplingParams(temperature=0.0, max_tokens=96))
        return gen.text.strip()

    return summarize


def add_usage(total: dict[str, int], usage: Usage) -> None:
    total["prompt_tokens"] = total.get("prompt_tokens", 0) + usage.prompt_tokens
    total["completion_tokens"] = total.get("completion_tokens", 0) + usage.completion_tokens
    total["total_tokens"] = total["prompt_tokens"] + total["completion_tokens"]


def system_text(messages: list[dict[str, Any]]) -> str:
    first = messages[0] if messages else {}
    if first.get("role") in ("system", "developer") and isinstance(first.get("content"), str):
        return first["content"]
    return ""

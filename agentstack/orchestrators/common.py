"""What every orchestrator shares: its dependencies, the output policy, and one guarded
generation call that streams tokens out as events.
"""

from __future__ import annotations

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
    seconds: float


async def generate(engine: ChatEngine, messages: list[dict[str, Any]], model: str, params: SamplingParams, *,
                   guard: AnswerGuard | None = None, emit: Callable[[Any], None] | None = None,
                   structured: StructuredOutput | None = None) -> Generation:
    """One engine call. Tokens pass through ``guard`` and go out through ``emit`` as TokenEvents."""
    started = time.perf_counter()
    raw, usage, version, prompt, finish = "", Usage(), model, None, None
    stream = engine.stream(ChatRequest(messages=messages, model=model, params=params, structured=structured))
    try:
        async for ev in stream:
            if ev.text:
                raw += ev.text
                out = guard.feed(ev.text) if guard is not None else ev.text
                if out and emit is not None:
                    emit(TokenEvent(out))
            finish = ev.finish_reason or finish
            if ev.usage is not None:
                usage, version, prompt = ev.usage, ev.model_version or version, ev.rendered_prompt
    finally:
        await stream.aclose()
    if guard is not None:
        rest = guard.finish()
        if rest and emit is not None:
            emit(TokenEvent(rest))
        text = guard.text
    else:
        text = raw
    return Generation(text=text, raw=raw, usage=usage, model_version=version, rendered_prompt=prompt,
                      finish_reason=finish, seconds=time.perf_counter() - started)


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

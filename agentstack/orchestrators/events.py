"""The typed events every orchestrator yields, and what a request to one looks like.

The server turns them into SSE events of the same names (``token``, ``source``, ``step``,
``done``; ``error`` is added by the server), documented in docs/api.md.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from agentstack.engines.params import SamplingParams

Mode = Literal["plain", "rag", "react"]


@dataclass
class Source:
    """One retrieved chunk as the model saw it: ``n`` is its citation number."""

    n: int
    index: str
    chunk_id: int
    doc_id: str
    title: str
    source: str
    score: float
    text: str
    snippet: str = ""

    def public(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Step:
    """One ReAct iteration."""

    n: int
    thought: str
    action: str
    action_input: str
    observation: str = ""
    error: str | None = None
    latency_ms: float = 0.0
    raw: str = ""

    def public(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class GroundingOptions:
    """A request's switches for the groundedness verifier; ``None`` = the deployment's setting
    (``orchestration.grounding``). See agentstack/grounding/."""

    enabled: bool | None = None
    unsupported: Literal["remove", "mark"] | None = None  # what happens to a claim the sources don't support
    fallback: Literal["abstain", "extract"] | None = None  # when no supported claim answers the question

    @classmethod
    def of(cls, value: "GroundingOptions | dict[str, Any] | bool | None") -> "GroundingOptions":
        if isinstance(value, GroundingOptions):
            return value
        if value is None:
            return cls()
        if isinstance(value, bool):
            return cls(enabled=value)
        return cls(**value)


@dataclass
class AgentRequest:
    messages: list[dict[str, Any]]  # the conversation, last message = the user's new turn
    mode: Mode = "plain"
    index: str | None = None
    top_k: int | None = None
    filters: dict[str, Any] | None = None  # metadata filters on retrieval (see docs/ingestion.md)
    params: SamplingParams = field(default_factory=SamplingParams)
    tools: list[str] | None = None  # narrows the deployment's allowlist
    structured: bool = True  # ReAct: constrain every step with a grammar
    model: str | None = None  # a concrete model version; None = the active one
    grounding: GroundingOptions = field(default_factory=GroundingOptions)

    def __post_init__(self) -> None:
        self.grounding = GroundingOptions.of(self.grounding)


@dataclass
class TokenEvent:
    text: str
    type: str = "token"


@dataclass
class SourceEvent:
    source: Source
    type: str = "source"


@dataclass
class StepEvent:
    step: Step
    type: str = "step"


@dataclass
class DoneEvent:
    answer: str
    sources: list[Source]
    trace: list[Step]
    usage: dict[str, int]
    model_version: str
    rendered_prompt: str | None
    messages: list[dict[str, Any]]  # what the (final) model call saw
    prompt_template_version: str
    finish_reason: str | None
    guard: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)  # ms per phase (retrieve, assemble, generate)
    grounding: dict[str, Any] = field(default_factory=dict)  # the verifier's per-claim scores and decision
    type: str = "done"


AgentEvent = TokenEvent | SourceEvent | StepEvent | DoneEvent

"""One entry point for every mode: ``Orchestrators(deps).run(request)`` yields typed events and
ends with a :class:`DoneEvent` carrying everything the response record needs.

Request errors (empty conversation, unknown index, a tool outside the allowlist, a model that does
not exist) are raised before the first event, so a server can still answer them as plain HTTP
errors.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, TypedDict

from langgraph.config import get_stream_writer
from langgraph.graph import END, START, StateGraph

from agentstack.engines.messages import normalize_messages
from agentstack.errors import InvalidRequestError
from agentstack.grounding.verifier import skipped
from agentstack.orchestrators import prompts
from agentstack.orchestrators.budget import TokenCounter, fit_history
from agentstack.orchestrators.common import AgentDeps, summarizer, Generation, add_usage, generate, system_text
from agentstack.orchestrators.events import AgentEvent, AgentRequest, DoneEvent
from agentstack.orchestrators.rag import RagOrchestrator
from agentstack.orchestrators.react import ReactOrchestrator

MODES = ("plain", "rag", "react")


class PlainState(TypedDict, total=False):
    request: AgentRequest
    model: str
    messages: list[dict[str, Any]]
    generation: Generation
    usage: dict[str, int]
    guard: dict[str, Any]


class PlainOrchestrator:
    def __init__(self, deps: AgentDeps):
        self.deps = deps
        graph = StateGraph(PlainState)
        graph.add_node("generate", self._generate)
        graph.add_edge(START, "generate")
        graph.add_edge("generate", END)
        self.graph = graph.compile()

    async def _generate(self, state: PlainState) -> PlainState:
        request, model = state["request"], state["model"]
        counter = TokenCounter(self.deps.engine, model)
        messages, _ = await fit_history(request.messages, counter, self.deps.settings.history_tokens,
                                        summarizer(self.deps, model))
        guard = self.deps.guard(system_prompt=system_text(messages))
        gen = await generate(self.deps.engine, messages, model, request.params, guard=guard, emit=get_stream_writer())
        usage: dict[str, int] = {}
        add_usage(usage, gen.usage)
        return {"generation": gen, "messages": messages, "usage": usage,
                "guard": dict(guard.stats.__dict__) if guard is not None else {}}


class Orchestrators:
    def __init__(self, deps: AgentDeps):
        self.deps = deps
        self.plain = PlainOrchestrator(deps)
        self.rag = RagOrchestrator(deps)
        self.react = ReactOrchestrator(deps)

    def _validate(self, request: AgentRequest) -> str:
        if request.mode not in MODES:
            raise InvalidRequestError(f"mode {request.mode!r} is not one of {', '.join(MODES)}", param="mode")
        normalize_messages(request.messages)  # raises naming the bad message
        if request.messages[-1].get("role") != "user":
            raise InvalidRequestError("the last message must be the user's", param="messages")
        if request.mode == "rag" and not request.index:
            raise InvalidRequestError("mode 'rag' needs an index", param="index", fix="pass index=<name>")
        if request.index:
            self.deps.open_index(request.index)  # NotFoundError now, not mid-stream
        if request.top_k is not None and not 1 <= request.top_k <= 50:
            raise InvalidRequestError("top_k must be between 1 and 50", param="top_k")
        if request.params.n != 1:
            raise InvalidRequestError("n must be 1 for rag and react; regenerate for another answer", param="n")
        return self.deps.resolve_model(request.model)

    async def run(self, request: AgentRequest) -> AsyncIterator[AgentEvent]:
        model = self._validate(request)
        if request.mode == "react":
            state: dict[str, Any] = dict(await self.react.initial_state(request, model))
            graph = self.react.graph
            template = prompts.REACT_VERSION
        else:
            state = {"request": request, "model": model}
            graph = self.rag.graph if request.mode == "rag" else self.plain.graph
            template = prompts.RAG_VERSION if request.mode == "rag" else prompts.PLAIN_VERSION
        final: dict[str, Any] = state
        limit = self.deps.tool_policy.max_steps * 2 + 10
        async for kind, chunk in graph.astream(state, stream_mode=["custom", "values"],
                                               config={"recursion_limit": limit}):
            if kind == "custom":
                yield chunk
            else:
                final = chunk
        yield self._done(request, final, template)

    def _done(self, request: AgentRequest, state: dict[str, Any], template: str) -> DoneEvent:
        if request.mode == "react":
            answer = state.get("answer")
            finish = state.get("finish_reason")
            if answer is None:
                answer = (f"I could not finish within {self.deps.tool_policy.max_steps} steps."
                          if len(state["steps"]) >= self.deps.tool_policy.max_steps else "")
                finish = "max_steps"
            return DoneEvent(answer=answer, sources=[], trace=state["steps"], usage=state["usage"],
                             model_version=state["last_version"], rendered_prompt=state["last_prompt"],
                             messages=state["messages"], prompt_template_version=template, finish_reason=finish,
                             guard={**state.get("guard", {}), "format_errors": state.get("format_errors", 0)},
                             grounding=state.get("grounding") or skipped(
                                 "unchecked", "no final answer to check", "react").public())
        gen: Generation = state["generation"]
        return DoneEvent(answer=gen.text, sources=state.get("sources", []), trace=[], usage=state["usage"],
                         model_version=gen.model_version, rendered_prompt=gen.rendered_prompt,
                         messages=state["messages"], prompt_template_version=template,
                         finish_reason=gen.finish_reason,
                         guard={**state.get("guard", {}), "abstained": bool(state.get("abstained"))},
                         timings={**state.get("timings", {}), "generate_ms": round(gen.seconds * 1000, 1)},
                         grounding=state.get("grounding") or skipped(
                             "unchecked", "plain chat has no sources to check against", "plain").public())

    async def complete(self, request: AgentRequest) -> DoneEvent:
        done = None
        async for event in self.run(request):
            if isinstance(event, DoneEvent):
                done = event
        assert done is not None
        return done

"""ReAct as a LangGraph loop: think → act → think … → finish.

Each model turn is one step in the classic text format::

    Thought: …
    Action: <tool>
    Action Input: …

or ``Thought: … / Final Answer: …``. The tool's result comes back as a user turn
``Observation: …``. With ``structured`` on (the default), every turn is generated under a Lark
grammar listing exactly the active tools, so it always parses and can only name an allowed tool
(llguidance on the embedded engine; vLLM's structured outputs on vLLM). Without it, the text is
parsed leniently and failures are counted as format errors and fed back to the model.

Limits: ``max_steps`` and a timeout per tool from ``policies/tools.yaml``. Tool errors become
observations. A call to a tool outside the active set is refused in code. Every step is traced
and streamed as a ``step`` event; the final answer streams as ``token`` events through the guard
and the groundedness verifier, which checks it against the tool observations and the question (a
number must come from one of them; see agentstack/grounding/verifier.py).
"""

from __future__ import annotations

import asyncio
import re
import time
from typing import Any, TypedDict

from langgraph.config import get_stream_writer
from langgraph.graph import END, START, StateGraph

from agentstack.engines.params import StructuredOutput
from agentstack.grounding.verifier import SentenceGate, skipped
from agentstack.orchestrators import prompts
from agentstack.orchestrators.budget import TokenCounter, fit_history
from agentstack.orchestrators.common import AgentDeps, summarizer, add_usage, generate, system_text
from agentstack.orchestrators.events import AgentRequest, Step, StepEvent, TokenEvent
from agentstack.orchestrators.tools import Tool

FINAL = "final_answer"
STEP_RE = re.compile(r"Thought:\s*(?P<thought>.*?)\s*(?:\n|$)\s*(?:Action:\s*(?P<action>[\w.-]+)\s*\n\s*"
                     r"Action Input:\s*(?P<input>.*)|Final Answer:\s*(?P<final>[\s\S]*))", re.IGNORECASE)


def step_grammar(tools: dict[str, Tool], final_only: bool = False, answer_tokens: int = 256) -> str:
    """A Lark grammar (llguidance dialect) for one step with exactly these tools, each input held
    to the tool's grammar or pattern and every free-text part to a token budget (a small model
    otherwise loops inside a field until the step runs out of tokens); ``final_only`` allows only
    a final answer."""
    alternatives = ['"Final Answer: " answer']
    rules = ["thought[max_tokens=60]: THOUGHT", f"answer[max_tokens={answer_tokens}]: ANSWER",
             "text_input[max_tokens=40]: INPUT"]
    terminals = ["THOUGHT: /[^\\n]{1,300}/", "ANSWER: /(.|\\n){1,2000}/", "INPUT: /[^\\n]{1,300}/"]
    if not final_only:
        for i, (name, tool) in enumerate(tools.items()):
            symbol = "text_input"
            if tool.input_grammar:  # bounded by its own structure (token limits apply to terminals only)
                symbol, lark = tool.input_grammar
                rules.append(lark.strip())
            elif tool.input_pattern:
                symbol = f"input_{i}"
                rules.append(f"{symbol}[max_tokens=40]: INPUT{i}")
                terminals.append(f"INPUT{i}: /{tool.input_pattern}/")
            alternatives.append(f'"Action: {name}\\nAction Input: " {symbol}')
    body = "\n    | ".join(alternatives)
    return 'start: "Thought: " thought "\\n" step\nstep: ' + body + "\n" + "\n".join(rules + terminals) + "\n"


def parse_step(text: str) -> tuple[str, str, str] | None:
    """(thought, action, action_input) — action is ``final_answer`` for a final answer — or None."""
    match = STEP_RE.search(text.strip())
    if match is None:
        return None
    thought = (match.group("thought") or "").strip()
    if match.group("final") is not None:
        return thought, FINAL, match.group("final").strip()
    return thought, match.group("action").strip(), (match.group("input") or "").strip().splitlines()[0].strip() \
        if (match.group("input") or "").strip() else ""


class ReactState(TypedDict, total=False):
    request: AgentRequest
    model: str
    messages: list[dict[str, Any]]
    tools: dict[str, Tool]
    steps: list[Step]
    answer: str | None
    usage: dict[str, int]
    format_errors: int
    last_prompt: str | None
    last_version: str
    finish_reason: str | None
    guard: dict[str, Any]
    force_final: bool
    grounding: dict[str, Any]


class ReactOrchestrator:
    def __init__(self, deps: AgentDeps):
        self.deps = deps
        graph = StateGraph(ReactState)
        graph.add_node("think", self._think)
        graph.add_node("act", self._act)
        graph.add_edge(START, "think")
        graph.add_conditional_edges("think", self._after_think, {"act": "act", "think": "think", "end": END})
        graph.add_edge("act", "think")
        self.graph = graph.compile()

    async def initial_state(self, request: AgentRequest, model: str) -> ReactState:
        index = self.deps.open_index(request.index)
        tools = self.deps.registry(index).active(self.deps.tool_policy, request.tools)
        listing = "\n".join(f"- {t.name}: {t.description} (input: {t.input_hint})" for t in tools.values())
        system = prompts.REACT_SYSTEM.format(tools=listing or "(none)")
        counter = TokenCounter(self.deps.engine, model)
        turns = [m for m in request.messages if m.get("role") in ("user", "assistant")]
        history, _ = await fit_history(turns, counter, self.deps.settings.history_tokens, summarizer(self.deps, model))
        return {"request": request, "model": model, "tools": tools, "steps": [], "answer": None, "usage": {},
                "format_errors": 0, "messages": [{"role": "system", "content": system}, *history],
                "last_prompt": None, "last_version": model, "finish_reason": None, "guard": {}}

    # -- nodes ------------------------------------------------------------------------------------
    async def _think(self, state: ReactState) -> ReactState:
        writer = get_stream_writer()
        request = state["request"]
        last_step = len(state["steps"]) >= self.deps.tool_policy.max_steps - 1  # the last step must answer
        grammar = step_grammar(state["tools"], final_only=state.get("force_final", False) or last_step,
                               answer_tokens=request.params.max_tokens or 256)
        structured = StructuredOutput(kind="grammar", value=grammar) if request.structured else None
        params = request.params.model_copy(update={
            "max_tokens": max(request.params.max_tokens or 0, self.deps.settings.react_step_tokens), "n": 1,
            "stop": [*request.params.stop, "\nObservation:"]})
        check = self.deps.answer_check(request, _question(request), _observations(state["steps"]), mode="react",
                                       eager=False)
        system = system_text(state["messages"])
        final_stream = _FinalAnswerStream(self.deps.guard(system_prompt=system), writer,
                                          SentenceGate(check, self.deps.guard())  # links only, as in rag
                                          if check is not None else None)
        gen = await generate(self.deps.engine, state["messages"], state["model"], params, structured=structured,
                             emit=final_stream.on_token)
        usage = dict(state["usage"])
        add_usage(usage, gen.usage)
        n = len(state["steps"]) + 1
        parsed = parse_step(gen.raw)
        update: ReactState = {"usage": usage, "last_prompt": gen.rendered_prompt, "last_version": gen.model_version,
                              "finish_reason": gen.finish_reason}
        messages = [*state["messages"], {"role": "assistant", "content": gen.raw.strip()}]
        if parsed is None:
            step = Step(n=n, thought="", action="", action_input="", raw=gen.raw,
                        error="format error: expected Thought/Action/Action Input or Thought/Final Answer")
            messages.append({"role": "user", "content": "Observation: format error. Reply with 'Thought: …' then "
                                                        "'Action: …' and 'Action Input: …', or 'Final Answer: …'."})
            update.update(format_errors=state["format_errors"] + 1)
        else:
            thought, action, arg = parsed
            step = Step(n=n, thought=thought, action=action, action_input=arg, raw=gen.raw)
            if action == FINAL:
                answer = await final_stream.finish(arg)
                update.update(answer=answer, guard=final_stream.stats())
                update["grounding"] = check.grounding().public() if check is not None else skipped(
                    "off", "the groundedness verifier is off for this request", "react").public()
        update.update(steps=[*state["steps"], step], messages=messages)
        if step.action == FINAL or step.error:
            writer(StepEvent(step))
        return update

    def _after_think(self, state: ReactState) -> str:
        if state.get("answer") is not None:
            return "end"
        if len(state["steps"]) >= self.deps.tool_policy.max_steps:
            return "end"
        return "act" if state["steps"][-1].error is None else "think"

    async def _act(self, state: ReactState) -> ReactState:
        writer = get_stream_writer()
        step = state["steps"][-1]
        started = time.perf_counter()
        tool = state["tools"].get(step.action)
        repeat = next((s for s in state["steps"][:-1] if s.action == step.action
                       and s.action_input == step.action_input and not s.error), None)
        force_final = False
        if repeat is not None:  # small models loop; after a repeated action only a final answer is allowed
            observation = f"{repeat.observation}\n(You already did this. Now give the Final Answer.)"
            force_final = True
        elif tool is None:
            step.error = f"tool {step.action!r} is not allowed here; allowed: {', '.join(state['tools']) or 'none'}"
            observation = f"Error: {step.error}"
        else:
            try:
                result = await asyncio.wait_for(tool(step.action_input),
                                                timeout=self.deps.tool_policy.timeout_for(tool.name))
                observation, _ = self.deps.screen(result[:self.deps.tool_policy.max_observation_chars])
            except asyncio.TimeoutError:
                step.error = f"{tool.name} timed out after {self.deps.tool_policy.timeout_for(tool.name):g} s"
                observation = f"Error: {step.error}"
            except Exception as exc:  # a tool error is an observation for the model, not a crash
                step.error = f"{tool.name} failed: {exc}"
                observation = f"Error: {step.error}"
        step.observation = observation
        step.latency_ms = round((time.perf_counter() - started) * 1000, 1)
        writer(StepEvent(step))
        messages = [*state["messages"], {"role": "user", "content": f"Observation: {observation}"}]
        return {"messages": messages, "steps": [*state["steps"][:-1], step], "force_final": force_final}


def _question(request: AgentRequest) -> str:
    from agentstack.engines.messages import content_text

    return content_text(request.messages[-1].get("content"), "message")


def _observations(steps: list[Step]) -> list[tuple[int, str]]:
    """The evidence a final answer may rest on (the question counts too: see build_evidence)."""
    return [(s.n, s.observation) for s in steps if s.observation and not s.error]


class _FinalAnswerStream:
    """Streams only the text after ``Final Answer:`` as tokens, through the guard and the
    groundedness verifier's sentence gate."""

    MARK = "Final Answer:"

    def __init__(self, guard: Any, writer: Any, gate: Any = None):
        self.guard, self.writer, self.gate = guard, writer, gate
        self.raw, self.started, self.sent = "", False, 0

    async def on_token(self, event: TokenEvent) -> None:
        self.raw += event.text
        if not self.started:
            at = self.raw.find(self.MARK)
            if at == -1:
                return
            self.started, self.sent = True, at + len(self.MARK)
        piece = self.raw[self.sent:]
        if not self.sent or self.raw[:self.sent].endswith(self.MARK):
            piece = piece.lstrip()
        if not piece:
            return
        self.sent = len(self.raw)
        out = self.guard.feed(piece) if self.guard is not None else piece
        if out and self.gate is not None:
            out = await self.gate.feed(out)
        if out:
            self.writer(TokenEvent(out))

    async def finish(self, answer: str) -> str:
        if self.guard is None:
            text = answer
        else:
            rest = self.guard.finish()
            text = self.guard.text.strip() or self.guard.sanitize(answer)
            if rest and self.gate is None:
                self.writer(TokenEvent(rest))
            elif rest:
                rest = await self.gate.feed(rest)
                if rest:
                    self.writer(TokenEvent(rest))
        if self.gate is None:
            return text
        if not self.started:  # the answer never streamed (parsed from the whole step): check it now
            rest = await self.gate.feed(text)
            if rest:
                self.writer(TokenEvent(rest))
        rest = await self.gate.finish()
        if rest:
            self.writer(TokenEvent(rest))
        return self.gate.text.strip()

    def stats(self) -> dict[str, Any]:
        return dict(self.guard.stats.__dict__) if self.guard is not None else {}

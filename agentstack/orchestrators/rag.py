"""Retrieval-augmented answers as a LangGraph graph:

    prepare → (rewrite) → retrieve → assemble → generate

* prepare: fit the conversation into its history budget; decide whether the question is a
  follow-up worth rewriting (earlier turns exist, and it is short or leans on pronouns).
* rewrite: the model turns the follow-up into a standalone question (falls back to the original).
* retrieve: the index's LangChain retriever (hybrid by default).
* assemble: deduplicate, number the sources [1]..[n], and truncate them to the context budget.
* generate: stream the answer through the guard, which drops citations of numbers that were never
  given and off-allowlist links, then through the groundedness verifier (agentstack/grounding),
  which releases a sentence only once it is checked against the sources, and abstains when no
  supported sentence answers the question. When no chunk reaches ``min_relevance`` the model is not
  called and the answer says the documents don't cover the question.

Sources are put in the user turn between clear delimiters, and the system prompt says they are
data; the guards do not rely on the model obeying that.
"""

from __future__ import annotations

import hashlib
import re
import time
from typing import Any, TypedDict

from langgraph.config import get_stream_writer
from langgraph.graph import END, START, StateGraph

from agentstack.engines.params import SamplingParams, StructuredOutput
from agentstack.grounding.verifier import SentenceGate, skipped
from agentstack.orchestrators import prompts
from agentstack.orchestrators.budget import TokenCounter, fit_history
from agentstack.orchestrators.common import AgentDeps, summarizer, Generation, add_usage, generate
from agentstack.orchestrators.events import AgentRequest, Source, SourceEvent, TokenEvent

FOLLOW_UP = re.compile(r"\b(it|its|they|them|their|this|that|these|those|he|she|him|her|his|one|ones|there|"
                       r"also|too|else|more|same|above|previous)\b", re.IGNORECASE)


class RagState(TypedDict, total=False):
    request: AgentRequest
    model: str
    question: str
    query: str
    history: list[dict[str, Any]]
    dropped: int
    hits: list[Any]
    sources: list[Source]
    messages: list[dict[str, Any]]
    generation: Generation
    usage: dict[str, int]
    abstained: bool
    guard: dict[str, Any]
    timings: dict[str, float]
    grounding: dict[str, Any]


def _user_text(message: dict[str, Any]) -> str:
    from agentstack.engines.messages import content_text

    return content_text(message.get("content"), "message")


def needs_rewrite(question: str, history: list[dict[str, Any]]) -> bool:
    earlier = [m for m in history[:-1] if m.get("role") in ("user", "assistant")]
    return bool(earlier) and (len(question.split()) <= 8 or bool(FOLLOW_UP.search(question)))


class RagOrchestrator:
    def __init__(self, deps: AgentDeps):
        self.deps = deps
        graph = StateGraph(RagState)
        graph.add_node("prepare", self._prepare)
        graph.add_node("rewrite", self._rewrite)
        graph.add_node("retrieve", self._retrieve)
        graph.add_node("assemble", self._assemble)
        graph.add_node("generate", self._generate)
        graph.add_edge(START, "prepare")
        graph.add_conditional_edges("prepare", self._route_rewrite, {"rewrite": "rewrite", "retrieve": "retrieve"})
        graph.add_edge("rewrite", "retrieve")
        graph.add_edge("retrieve", "assemble")
        graph.add_edge("assemble", "generate")
        graph.add_edge("generate", END)
        self.graph = graph.compile()

    # -- nodes ------------------------------------------------------------------------------------
    async def _prepare(self, state: RagState) -> RagState:
        request, model = state["request"], state["model"]
        counter = TokenCounter(self.deps.engine, model)
        turns = [m for m in request.messages if m.get("role") in ("user", "assistant")]
        history, dropped = await fit_history(turns, counter, self.deps.settings.history_tokens,
                                             summarizer(self.deps, model))
        question = _user_text(request.messages[-1]).strip()
        return {"question": question, "query": question, "history": history, "dropped": dropped, "usage": {}}

    def _route_rewrite(self, state: RagState) -> str:
        if self.deps.settings.rewrite_queries and needs_rewrite(state["question"], state["history"]):
            return "rewrite"
        return "retrieve"

    async def _rewrite(self, state: RagState) -> RagState:
        convo = "\n".join(f"{m['role']}: {_user_text(m)[:500]}" for m in state["history"][-6:])
        messages = [{"role": "system", "content": prompts.REWRITE_SYSTEM},
                    {"role": "user", "content": f"{convo}\n\nRewrite the last question."}]
        gen = await generate(self.deps.engine, messages, state["model"],
                             SamplingParams(temperature=0.0, max_tokens=48, stop=["\n"]))
        usage = dict(state["usage"])
        add_usage(usage, gen.usage)
        rewritten = gen.text.strip().strip('"')
        ok = 3 <= len(rewritten) <= 400
        return {"query": f"{rewritten} {state['question']}" if ok else state["question"], "usage": usage}

    async def _retrieve(self, state: RagState) -> RagState:
        request = state["request"]
        index = self.deps.open_index(request.index)
        retriever = index.as_retriever(k=request.top_k or self.deps.settings.top_k,
                                       mode=self.deps.settings.search_mode, filters=request.filters)
        started = time.perf_counter()
        docs = await retriever.ainvoke(state["query"])
        return {"hits": docs, "timings": {**state.get("timings", {}), "retrieve_ms": _ms(started)}}

    async def _assemble(self, state: RagState) -> RagState:
        started = time.perf_counter()
        counter = TokenCounter(self.deps.engine, state["model"])
        budget = self.deps.settings.context_tokens
        writer = get_stream_writer()
        relevant = relevant_hits(state["hits"], self.deps.settings.min_relevance)
        sources: list[Source] = []
        seen: set[str] = set()
        used = removed = 0
        for doc in relevant:
            key = hashlib.sha1(" ".join(doc.page_content.split()).lower().encode()).hexdigest()
            if key in seen or str(doc.metadata.get("chunk_id")) in seen:
                continue
            seen.update({key, str(doc.metadata.get("chunk_id"))})
            room = budget - used
            if room < 32:
                break
            clean, flagged = self.deps.screen(doc.page_content)
            removed += flagged
            text = await counter.truncate(clean, room)
            used += await counter.text(text)
            meta = doc.metadata
            source = Source(n=len(sources) + 1, index=meta.get("index", state["request"].index or ""),
                            chunk_id=int(meta.get("chunk_id", -1)), doc_id=str(meta.get("doc_id", "")),
                            title=str(meta.get("title", "")), source=str(meta.get("source", "")),
                            score=float(meta.get("score", 0.0)), text=text, snippet=text[:240])
            sources.append(source)
            writer(SourceEvent(source))
        return {"sources": sources, "guard": {"injections_removed": removed},
                "timings": {**state.get("timings", {}), "assemble_ms": _ms(started)}}

    async def _generate(self, state: RagState) -> RagState:
        writer = get_stream_writer()
        request, sources = state["request"], state["sources"]
        usage = dict(state["usage"])
        if not sources:
            text = self.deps.settings.abstain_message
            writer(TokenEvent(text))
            gen = Generation(text=text, raw=text, usage=_zero(), model_version=state["model"], rendered_prompt=None,
                             finish_reason="stop", seconds=0.0)
            return {"generation": gen, "messages": [], "abstained": True, "usage": usage, "guard": {},
                    "grounding": skipped("abstained", "no retrieved source reached min_relevance").public()}
        block = "\n\n".join(prompts.SOURCE_LINE.format(n=s.n, title=s.title or s.source, text=s.text)
                            for s in sources)
        user = prompts.RAG_USER.format(sources=block, question=state["question"])
        messages = [{"role": "system", "content": prompts.RAG_SYSTEM}, *state["history"][:-1],
                    {"role": "user", "content": user}]
        cited = frozenset(s.n for s in sources)
        guard = self.deps.guard(system_prompt=prompts.RAG_SYSTEM, citations=cited)
        structured = None
        if self.deps.settings.require_citation and self.deps.engine.capabilities.structured_output:
            structured = StructuredOutput(kind="grammar", value=citation_grammar(len(sources)))
        check = self.deps.answer_check(request, state["question"], [(s.n, s.text) for s in sources])
        # what the check releases is guarded again: dropping a sentence can change how the rest parses.
        # Links and citations only: the first guard removed every copy of the system prompt, and
        # dropping a sentence cannot make one
        gate = (SentenceGate(check, self.deps.guard(citations=cited))
                if check is not None else None)
        gen = await generate(self.deps.engine, messages, state["model"], request.params, guard=guard, emit=writer,
                             structured=structured, gate=gate)
        add_usage(usage, gen.usage)
        stats = guard.stats.__dict__ if guard is not None else {}
        timings = {**state.get("timings", {}), "generate_ms": round(gen.seconds * 1000, 1)}
        if check is None:
            grounding = skipped("off", "the groundedness verifier is off for this request").public()
        else:
            grounding = check.grounding().public()
            timings.update(verify_ms=grounding["verify_ms"],
                           verify_after_generate_ms=round((gen.total_seconds - gen.seconds) * 1000, 1))
        return {"generation": gen, "messages": messages, "usage": usage,
                "abstained": grounding["decision"] == "abstained", "guard": {**state.get("guard", {}), **stats},
                "timings": timings, "grounding": grounding}


def citation_grammar(n_sources: int) -> str:
    """Answers that cite at least one of the ``n_sources`` sources (Lark, llguidance dialect): a
    small model left to itself rarely writes a citation at all."""
    cites = " | ".join(f'"[{i}]"' for i in range(1, n_sources + 1))
    return ("start: PRE CITE POST\n"
            "PRE: /[^\\[\\]]{1,240}/\n"
            f"CITE: {cites}\n"
            "POST: /(.|\\n){0,2000}/\n")


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 1)


def relevant_hits(docs: list[Any], threshold: float) -> list[Any]:
    """All hits if the best dense (cosine) score reaches ``threshold``, else none. Fused hybrid
    scores are ranks, not relevance; a BM25-only search has no dense score and is kept."""
    dense = [float((d.metadata.get("scores") or {})["dense"]) for d in docs
             if "dense" in (d.metadata.get("scores") or {})]
    if not dense:
        return list(docs)
    return list(docs) if max(dense) >= threshold else []


def _zero() -> Any:
    from agentstack.engines.base import Usage

    return Usage()

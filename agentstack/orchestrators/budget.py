"""Token budgets: counting, truncating, and fitting a conversation into its share of the context.

History policy: the system prompt and the newest turns stay; older turns are summarised (when
enabled) or dropped, within ``history_tokens``. The newest user message is truncated (head and
tail kept) if it alone exceeds the budget, so a long conversation never fails with "context too
long".
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from agentstack.engines.base import ChatEngine
from agentstack.engines.messages import content_text

PER_MESSAGE_OVERHEAD = 4  # role markers of a chat template


class TokenCounter:
    """Exact counts with the engine's tokenizer when it has one (embedded), else via the engine's
    ``count_text_tokens`` (vLLM's /tokenize), with proportional truncation."""

    def __init__(self, engine: ChatEngine, model: str):
        self.engine = engine
        self.model = model
        self._cache: dict[str, int] = {}

    async def text(self, text: str) -> int:
        if text not in self._cache:
            self._cache[text] = await self.engine.count_text_tokens(text, self.model)
        return self._cache[text]

    async def message(self, message: dict[str, Any]) -> int:
        return await self.text(content_text(message.get("content"), "message")) + PER_MESSAGE_OVERHEAD

    async def truncate(self, text: str, max_tokens: int) -> str:
        if max_tokens <= 0:
            return ""
        n = await self.text(text)
        if n <= max_tokens:
            return text
        exact = getattr(self.engine, "truncate_text", None)
        if exact is not None:
            return exact(text, max_tokens)
        return text[:max(1, int(len(text) * max_tokens / n * 0.95))]


async def fit_history(messages: list[dict[str, Any]], counter: TokenCounter, budget: int,
                      summarize: Callable[[list[dict[str, Any]]], Awaitable[str]] | None = None
                      ) -> tuple[list[dict[str, Any]], int]:
    """Return (messages within ``budget`` tokens, number of turns dropped or summarised)."""
    system = [m for m in messages[:1] if m.get("role") in ("system", "developer")]
    turns = messages[len(system):]
    if not turns:
        return list(messages), 0
    used = sum([await counter.message(m) for m in system])
    kept: list[dict[str, Any]] = []
    for message in reversed(turns):
        cost = await counter.message(message)
        if used + cost > budget and kept:
            break
        kept.insert(0, message)
        used += cost
    last = kept[-1]
    if used > budget:  # the newest message alone is too long: keep its head and tail
        room = max(16, budget - (used - await counter.message(last)) - PER_MESSAGE_OVERHEAD)
        text = content_text(last.get("content"), "message")
        head = await counter.truncate(text, room // 2)
        tail_chars = max(0, len(head))
        tail = text[-tail_chars:] if tail_chars else ""
        kept[-1] = {**last, "content": f"{head}\n[…]\n{tail}"}
    dropped = turns[:len(turns) - len(kept)]
    if dropped and summarize is not None:
        summary = await summarize(dropped)
        if summary:
            from agentstack.orchestrators.prompts import SUMMARY_NOTE

            note = {"role": "system", "content": SUMMARY_NOTE.format(summary=summary)}
            if system:
                system = [{**system[0], "content": f"{system[0]['content']}\n\n{note['content']}"}]
            else:
                system = [note]
    return system + kept, len(dropped)

"""Bounded, retrying access to a chat engine, shared by a system under test and its judges.

An eval run fires many requests at once so that the embedded engine can batch them; this wrapper
keeps at most ``concurrency`` of them in flight (beyond that the engine would queue or refuse
with :class:`~agentstack.errors.OverloadedError`), retries refusals after the engine's hint, and
counts requests and tokens for the report. It knows nothing about prompts or metrics.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from agentstack.engines.base import ChatEngine, ChatRequest, ChatResult
from agentstack.errors import OverloadedError

log = logging.getLogger(__name__)


class EngineClient:
    def __init__(self, engine: ChatEngine, concurrency: int = 8, retries: int = 6):
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {concurrency}")
        self.engine = engine
        self.concurrency = concurrency
        self.retries = retries
        self._sem: asyncio.Semaphore | None = None
        self.requests = 0
        self.prompt_tokens = 0
        self.completion_tokens = 0

    @property
    def sem(self) -> asyncio.Semaphore:
        if self._sem is None:
            self._sem = asyncio.Semaphore(self.concurrency)
        return self._sem

    @property
    def supports_structured(self) -> bool:
        return bool(getattr(getattr(self.engine, "capabilities", None), "structured_output", False))

    def default_model(self) -> str:
        """The base model: the engine's first model without a parent."""
        models = self.engine.models()
        for m in models:
            if m.parent is None:
                return m.id
        if models:
            return models[0].id
        raise LookupError("the engine lists no models")

    def context_length(self, model: str) -> int:
        return self.engine.context_length(model)

    async def count_tokens(self, messages: list[dict[str, Any]], model: str) -> int:
        return await self.engine.count_tokens(messages, model)

    async def chat(self, request: ChatRequest) -> ChatResult:
        attempt = 0
        while True:
            async with self.sem:
                try:
                    result = await self.engine.chat(request)
                except OverloadedError as exc:
                    if attempt >= self.retries:
                        raise
                    delay = max(0.1, exc.retry_after) * (attempt + 1)
                else:
                    self.requests += 1
                    self.prompt_tokens += result.usage.prompt_tokens
                    self.completion_tokens += result.usage.completion_tokens
                    return result
            attempt += 1
            log.debug("engine overloaded; retry %d in %.1f s", attempt, delay)
            await asyncio.sleep(delay)

    def usage(self) -> dict[str, int]:
        return {"requests": self.requests, "prompt_tokens": self.prompt_tokens,
                "completion_tokens": self.completion_tokens}

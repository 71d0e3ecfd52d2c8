"""``agentstack.Agent``: plain, RAG and ReAct chat from Python, without the server.

    from agentstack import Agent
    agent = Agent()                       # the embedded engine and the indexes under the data dir
    print(agent.ask("What is agentstack?", mode="rag", index="demo").answer)
    for event in agent.stream("12 * 7?", mode="react"):
        ...

It builds the same components the server builds (engine, model router, index manager, policies)
from the settings, lazily. Methods come in sync and async pairs.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

from agentstack.config import Settings, load_settings
from agentstack.engines.params import SamplingParams
from agentstack.orchestrators.events import AgentEvent, AgentRequest, DoneEvent, Mode


class Agent:
    def __init__(self, settings: Settings | None = None, *, engine: Any = None, indexes: Any = None):
        self.settings = settings or load_settings()
        self._engine = engine
        self._indexes = indexes
        self._orchestrators: Any = None
        self._router: Any = None

    @property
    def engine(self) -> Any:
        if self._engine is None:
            from agentstack.engines import build_engine

            self._engine = build_engine(self.settings)
        self._engine.warm_up()
        return self._engine

    @property
    def orchestrators(self) -> Any:
        if self._orchestrators is None:
            from agentstack.engines.router import ModelRouter
            from agentstack.index.manager import IndexManager
            from agentstack.orchestrators.common import AgentDeps
            from agentstack.orchestrators.runner import Orchestrators

            from agentstack.db import open_db
            from agentstack.state.records import ModelState

            engine = self.engine
            alias = self.settings.engine.served_model_name
            self._router = ModelRouter(engine, alias, ModelState(open_db(self.settings), alias))
            indexes = self._indexes or IndexManager(self.settings)
            resolve = lambda name: self._router.resolve(name) if name else self._router.active  # noqa: E731
            self._orchestrators = Orchestrators(AgentDeps.load(engine, self.settings, resolve, indexes))
        return self._orchestrators

    def register_tool(self, name: str, func: Any, description: str, input_hint: str = "text") -> None:
        """Add a Python tool; the deployment's ``policies/tools.yaml`` must allow it by name."""
        self.orchestrators.deps.extra_tools.register(name, func, description, input_hint)

    def _request(self, message: str | list[dict[str, Any]], mode: Mode, index: str | None, **kwargs: Any
                 ) -> AgentRequest:
        messages = [{"role": "user", "content": message}] if isinstance(message, str) else list(message)
        sampling = {k: kwargs.pop(k) for k in list(kwargs) if k in SamplingParams.model_fields}
        sampling.setdefault("temperature", self.settings.orchestration.temperature)
        sampling.setdefault("repetition_penalty", self.settings.orchestration.repetition_penalty)
        return AgentRequest(messages=messages, mode=mode, index=index, params=SamplingParams(**sampling), **kwargs)

    async def astream(self, message: str | list[dict[str, Any]], *, mode: Mode = "plain", index: str | None = None,
                      **kwargs: Any) -> AsyncIterator[AgentEvent]:
        async for event in self.orchestrators.run(self._request(message, mode, index, **kwargs)):
            yield event

    async def aask(self, message: str | list[dict[str, Any]], *, mode: Mode = "plain", index: str | None = None,
                   **kwargs: Any) -> DoneEvent:
        return await self.orchestrators.complete(self._request(message, mode, index, **kwargs))

    def ask(self, message: str | list[dict[str, Any]], **kwargs: Any) -> DoneEvent:
        return asyncio.run(self.aask(message, **kwargs))

    def stream(self, message: str | list[dict[str, Any]], **kwargs: Any) -> Iterator[AgentEvent]:
        """Sync streaming: runs the async stream on a private event loop."""
        loop = asyncio.new_event_loop()
        agen = self.astream(message, **kwargs)
        try:
            while True:
                try:
                    yield loop.run_until_complete(agen.__anext__())
                except StopAsyncIteration:
                    return
        finally:
            loop.run_until_complete(agen.aclose())
            loop.close()

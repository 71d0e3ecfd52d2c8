"""Chat engines behind one protocol (see ``base.py``), and the factory that builds the configured one.

``scripted.py`` (an engine that obeys every instruction it reads) is for tests and ``bench/``
only: they construct it directly; settings cannot select it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from agentstack.config import Settings
from agentstack.engines.base import ChatEngine, ChatRequest, ChatResult, StreamEvent
from agentstack.engines.params import SamplingParams, StructuredOutput

__all__ = ["ChatEngine", "ChatRequest", "ChatResult", "SamplingParams", "StreamEvent", "StructuredOutput",
           "build_engine"]


def build_engine(settings: Settings, metrics: Any = None) -> ChatEngine:
    """The engine named by ``settings.engine.kind``; cheap, call ``warm_up()`` to load it."""
    if settings.engine.kind == "llamacpp":
        from agentstack.engines.llamacpp.engine import LlamaCppEngine

        return LlamaCppEngine(settings.engine, Path(settings.model_cache), metrics=metrics)
    if settings.engine.kind == "embedded":
        from agentstack.engines.embedded.engine import EmbeddedEngine

        return EmbeddedEngine(settings.engine, Path(settings.model_cache), metrics=metrics)
    from agentstack.engines.openai_engine import OpenAIEngine

    return OpenAIEngine(settings.engine)

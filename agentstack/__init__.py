"""agentstack: retrieval-augmented, tool-using chat whose model learns from its users' thumbs.

The public API is small and imports nothing heavy: ``Settings``/``load_settings`` and, lazily,
``Agent`` (orchestration without the server).
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

from agentstack.config import Settings, load_settings  # noqa: E402  (light: pydantic only)

__all__ = ["Agent", "Settings", "load_settings", "__version__"]


def __getattr__(name: str) -> Any:  # lazy, so `import agentstack` stays fast
    if name == "Agent":
        from agentstack.agent import Agent

        return Agent
    raise AttributeError(name)

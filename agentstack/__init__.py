"""agentstack: retrieval-augmented, tool-using chat whose model learns from its users' thumbs.

The public API is small and imports nothing heavy: ``Settings``/``load_settings`` and, lazily,
``Agent`` (orchestration without the server).
"""

from __future__ import annotations

import os
from typing import Any

__version__ = "0.1.0"

# OpenMP threads wait passively (sleep at once) unless the user says otherwise. llama.cpp (the
# default engine) and torch (embedder, gate, training) each run OpenMP teams, and with the default
# spin-waiting two teams on 2 busy cores starve each other: measured here, llama.cpp fell from 17.7
# to 1.5 tok/s beside other load. libgomp reads this once, when it is loaded, so it is set before
# anything heavy is imported (see docs/architecture.md, "Compute").
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from agentstack.config import Settings, load_settings  # noqa: E402  (light: pydantic only)

__all__ = ["Agent", "Settings", "load_settings", "__version__"]


def __getattr__(name: str) -> Any:  # lazy, so `import agentstack` stays fast
    if name == "Agent":
        from agentstack.agent import Agent

        return Agent
    raise AttributeError(name)

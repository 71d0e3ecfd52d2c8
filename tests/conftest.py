"""Shared fixtures.

* Every test gets its own ``AGENTSTACK_DATA_DIR`` (autouse), so no test sees another's indexes,
  databases or registry, and nothing touches the user's real data.
* ``AGENTSTACK_MODEL_CACHE`` is shared by the whole run (default: the user's cache directory, or
  ``AGENTSTACK_TEST_MODEL_CACHE``), so the SmolLM2 GGUF is converted to safetensors once.
* Nothing is downloaded: ``HF_HUB_OFFLINE=1``.
"""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs
import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

MODEL_CACHE = Path(os.environ.get("AGENTSTACK_TEST_MODEL_CACHE")
                   or Path(platformdirs.user_cache_dir("agentstack")) / "models")


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in list(os.environ):
        if name.startswith("AGENTSTACK_"):
            monkeypatch.delenv(name)
    data = tmp_path / "data"
    monkeypatch.setenv("AGENTSTACK_DATA_DIR", str(data))
    monkeypatch.setenv("AGENTSTACK_MODEL_CACHE", str(MODEL_CACHE))
    monkeypatch.chdir(tmp_path)  # no stray agentstack.toml is picked up
    return data


@pytest.fixture
def data_dir(_isolated_env: Path) -> Path:
    return _isolated_env


@pytest.fixture
def settings(_isolated_env: Path):
    from agentstack.config import load_settings

    return load_settings()


@pytest.fixture(scope="session")
def embedded_engine():
    """The real SmolLM2 engine, loaded once per run (converted once per cache)."""
    from agentstack.config import EngineSettings
    from agentstack.engines.embedded.engine import EmbeddedEngine

    engine = EmbeddedEngine(EngineSettings(max_batch_size=8, max_running=16, max_queue=16), MODEL_CACHE)
    engine.warm_up()
    yield engine
    import asyncio

    asyncio.run(engine.aclose())

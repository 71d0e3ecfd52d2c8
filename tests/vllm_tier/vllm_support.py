"""Helpers shared by the tests against a real vLLM: LoRA adapters of any shape on the SmolLM2 base,
agentstack servers in front of vLLM, and polling."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import APP_KEY, OPERATOR_KEY

APP = {"Authorization": f"Bearer {APP_KEY}"}
OP = {"Authorization": f"Bearer {OPERATOR_KEY}"}


def lora(engine: Any, path: Path, *, seed: int = 0, **config: Any) -> Path:
    """A real random LoRA on the base weights vLLM serves; ``config`` shapes it (r, use_dora, ...)."""
    from tests.integration.alignment_support import random_adapter

    return random_adapter(engine, path, seed=seed, **config)


@contextlib.contextmanager
def front_server(data_dir: Path, base_url: str, model: str, **overrides: Any) -> Iterator[Any]:
    """agentstack (``engine.kind=openai``) on loopback in front of vLLM at ``base_url``."""
    from server.app import create_app
    from tests.conftest import LiveServer, make_settings

    engine_overrides = overrides.pop("engine", {})
    settings = make_settings(data_dir, engine={"kind": "openai", "base_url": base_url, "model": model,
                                               "timeout_s": 300, "max_retries": 0, **engine_overrides}, **overrides)
    with LiveServer(create_app(settings)) as srv:  # the app builds and owns its openai engine
        yield srv


def served(url: str) -> set[str]:
    """The model ids a vLLM (or agentstack) server lists."""
    return {m["id"] for m in httpx.get(f"{url}/v1/models", headers=OP, timeout=30).json()["data"]}


def wait_until(check: Callable[[], Any], timeout: float, every: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not true after {timeout} s: {check}")
        time.sleep(every)


def answer(url: str, model: str, prompt: str, headers: dict[str, str] | None = None, **extra: Any) -> dict:
    body = {"model": model, "messages": [{"role": "user", "content": prompt}], "max_tokens": 16, "temperature": 0,
            **extra}
    r = httpx.post(f"{url}/v1/chat/completions", json=body, headers=headers or APP, timeout=300)
    assert r.status_code == 200, r.text
    return r.json()

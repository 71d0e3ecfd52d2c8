"""The ``vllm`` test tier: a real vLLM server, and every payload checked against vLLM's own models.

* Tests marked ``vllm`` run only when the run selects them (``-m vllm``, as ``make test-vllm`` and
  ``.ci/run`` do); other runs deselect them (they are not skipped). A vLLM that cannot start fails
  them: there is no skip.
* ``vllm_server``: one vLLM per test session (startup takes 60-90 s on 2 cores) on a free loopback
  port, serving the SmolLM2 weights the embedded engine converts, stopped by pid at the end.
* ``vllm_payloads``: every request body sent to a vLLM started here (by any httpx client: the
  ``openai`` engine, agentstack's server in front) is recorded; after each ``vllm`` test the
  bodies are validated by ``tests/vllm_validate.py`` in the vLLM venv, and the test fails when vLLM's
  request models reject one or leave any key unused (``model_extra``).
"""

from __future__ import annotations

import json
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

VALIDATOR = Path(__file__).with_name("vllm_validate.py")
PAYLOAD_PATHS = ("/chat/completions", "/tokenize", "/load_lora_adapter", "/unload_lora_adapter")


def selects_vllm(markexpr: str) -> bool:
    """Whether ``-m markexpr`` asks for the tests marked ``vllm``."""
    if not markexpr:
        return False
    from _pytest.mark.expression import Expression

    expr = Expression.compile(markexpr)  # names vllm positively: true with it, false without any marker
    return expr.evaluate(lambda name, **kwargs: name == "vllm") and not expr.evaluate(lambda name, **kwargs: False)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if selects_vllm(config.option.markexpr or ""):
        return
    kept, dropped = [], []
    for item in items:
        (dropped if item.get_closest_marker("vllm") else kept).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


class PayloadRecorder:
    """Request bodies sent to the vLLM servers this session started."""

    def __init__(self) -> None:
        self.urls: list[str] = []
        self.python: Path | None = None  # the vLLM venv's, for the validator
        self.seen: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._validator: subprocess.Popen | None = None
        self._originals: tuple[Any, Any] | None = None

    def record(self, request: httpx.Request) -> None:
        url = str(request.url)
        if request.method != "POST" or not any(url.startswith(u) for u in self.urls):
            return
        if not url.endswith(PAYLOAD_PATHS):
            return
        try:
            body = json.loads(request.content or b"{}")
        except ValueError:
            body = {"__not_json__": request.content[:200].decode(errors="replace")}
        with self._lock:
            self.seen.append({"path": request.url.path, "body": body})

    def install(self) -> None:
        recorder, sync_send, async_send = self, httpx.Client.send, httpx.AsyncClient.send

        def send(client, request, *args, **kwargs):
            recorder.record(request)
            return sync_send(client, request, *args, **kwargs)

        async def asend(client, request, *args, **kwargs):
            recorder.record(request)
            return await async_send(client, request, *args, **kwargs)

        self._originals = (sync_send, async_send)
        httpx.Client.send, httpx.AsyncClient.send = send, asend

    def uninstall(self) -> None:
        if self._originals is not None:
            httpx.Client.send, httpx.AsyncClient.send = self._originals
        if self._validator is not None:
            self._validator.stdin.close()
            self._validator.wait(30)

    def take(self) -> list[dict[str, Any]]:
        with self._lock:
            seen, self.seen = self.seen, []
        return seen

    def validate(self, payloads: list[dict[str, Any]]) -> list[str]:
        """Problems vLLM's request models find in ``payloads`` (empty: all clean)."""
        if not payloads:
            return []
        if self._validator is None:
            assert self.python is not None
            self._validator = subprocess.Popen([str(self.python), str(VALIDATOR)], stdin=subprocess.PIPE,
                                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            ready = self._validator.stdout.readline()
            assert ready.strip(), "the vLLM payload validator did not start"
        problems = []
        for payload in payloads:
            self._validator.stdin.write(json.dumps(payload) + "\n")
            self._validator.stdin.flush()
            answer = json.loads(self._validator.stdout.readline())
            if not answer["ok"]:
                problems.append(f"{payload['path']}: {answer['problems']} in {json.dumps(payload['body'])[:300]}")
        return problems


@pytest.fixture(scope="session")
def vllm_payloads() -> Iterator[PayloadRecorder]:
    recorder = PayloadRecorder()
    recorder.install()
    yield recorder
    recorder.uninstall()


def start_vllm(tmp: Path, recorder: PayloadRecorder, name: str, **env: str):
    """A started and healthy vLLM (the installed venv, the SmolLM2 weights, agentstack's flags)."""
    from agentstack.config import load_settings
    from agentstack.vllm_local.process import server_for
    from tests.conftest import MODEL_CACHE

    settings = load_settings(model_cache=MODEL_CACHE)
    server = server_for(settings, port=0, log_path=tmp / f"{name}.log", env=env)
    recorder.urls.append(server.url)
    recorder.python = server.python
    server.start()
    try:
        server.wait_ready()
    except BaseException:
        server.stop()
        raise
    return server


@pytest.fixture(scope="session")
def vllm_server(tmp_path_factory: pytest.TempPathFactory, vllm_payloads: PayloadRecorder):
    """One real vLLM for the whole session (``.restart()`` it only where a test is about restarts)."""
    server = start_vllm(tmp_path_factory.mktemp("vllm"), vllm_payloads, "vllm-a")
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def _vllm_payloads_are_vllms(request: pytest.FixtureRequest) -> Iterator[None]:
    if request.node.get_closest_marker("vllm") is None:
        yield
        return
    recorder: PayloadRecorder = request.getfixturevalue("vllm_payloads")
    recorder.take()
    yield
    problems = recorder.validate(recorder.take())
    assert not problems, "payloads vLLM's request models do not fully accept:\n" + "\n".join(problems)

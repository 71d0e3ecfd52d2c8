"""The commands a newcomer runs: `agentstack serve` (real subprocess, demo index built on first start),
`agentstack models`, and `agentstack chat` in plain and rag mode, driven through stdin."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import httpx
import pytest

from tests.conftest import MODEL_CACHE

pytestmark = pytest.mark.integration


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    data = tmp_path_factory.mktemp("served")
    port = _free_port()
    env = {**os.environ, "AGENTSTACK_DATA_DIR": str(data), "AGENTSTACK_MODEL_CACHE": str(MODEL_CACHE),
           "AGENTSTACK_ENGINE__THREADS": "1", "AGENTSTACK_LOG_LEVEL": "WARNING",
           "AGENTSTACK_CLIENT__URL": f"http://127.0.0.1:{port}"}
    proc = subprocess.Popen([sys.executable, "-m", "agentstack.cli", "serve", "--port", str(port)], env=env,
                            cwd=data, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 300
    while True:
        assert proc.poll() is None, proc.stdout.read()
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, "server not ready"
        time.sleep(0.2)
    yield env
    proc.terminate()
    proc.wait(30)


def cli(env, *args, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "agentstack.cli", *args], env=env, input=stdin, text=True,
                          capture_output=True, timeout=300)


def test_models_json(served):
    out = cli(served, "models", "--json")
    assert out.returncode == 0, out.stderr
    ids = [m["id"] for m in json.loads(out.stdout)]
    assert ids[0] == "agentstack" and "rag:demo" in ids  # the demo index was built on first start


def test_chat_plain_and_rag(served):
    out = cli(served, "chat", "--max-tokens", "16", stdin="Say hello.\n/exit\n")
    assert out.returncode == 0, out.stderr
    assert "bot> " in out.stdout and len(out.stdout.split("bot> ", 1)[1].strip()) > 0
    out = cli(served, "chat", "--mode", "rag", "--index", "demo", "--max-tokens", "24",
              stdin="What does make test do?\n")
    assert out.returncode == 0, out.stderr
    assert "bot> " in out.stdout and "[1]" in out.stderr  # the sources are listed
    assert "grounding: " in out.stderr  # and the verifier's verdict


def test_chat_reports_a_down_server(served):
    env = {**served, "AGENTSTACK_CLIENT__URL": f"http://127.0.0.1:{_free_port()}"}
    out = cli(env, "chat", stdin="hi\n")
    assert out.returncode == 1 and "cannot reach agentstack" in out.stderr and "make serve" in out.stderr

"""A promotion killed mid-way (SIGKILL of the whole server) leaves the previous version serving;
one killed after the swap was persisted comes back on the new version after a restart."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.integration.alignment_support import APP, OP, random_adapter, register

pytestmark = pytest.mark.integration
CHILD = Path(__file__).with_name("alignment_server_child.py")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Child:
    def __init__(self, data_dir: Path, fault: str):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        self.proc = subprocess.Popen([sys.executable, str(CHILD), str(data_dir), str(self.port), fault], env=env)
        deadline = time.monotonic() + 180
        while True:
            assert self.proc.poll() is None, "the server child died while starting"
            try:
                if httpx.get(f"{self.url}/readyz", timeout=30).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "the server child did not become ready"
            time.sleep(0.3)

    def serving(self) -> str:
        r = httpx.post(f"{self.url}/v1/chat/completions", headers=APP, timeout=120, json={
            "model": "agentstack", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2})
        return r.json()["model_version"]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(30)


def test_killed_promotions(embedded_engine, tmp_path):
    data = tmp_path / "data"
    version = register(data / "registry", random_adapter(embedded_engine, tmp_path / "adapter", seed=7, scale=0.5))
    base = embedded_engine.base_name

    def persisted() -> str | None:  # the served version as the database holds it
        import sqlite3

        conn = sqlite3.connect(data / "agentstack.db")
        try:
            row = conn.execute("SELECT active FROM model_state").fetchone()
        finally:
            conn.close()
        return row[0] if row else None

    child = Child(data, "promote.loaded")  # dies after loading the adapter, before the swap
    try:
        assert child.serving() == base
        with pytest.raises(httpx.HTTPError):
            httpx.post(f"{child.url}/v1/admin/models/{version}/promote", headers=OP, timeout=120)
        assert child.proc.wait(30) == -9
    finally:
        child.stop()
    assert persisted() in (None, base)

    child = Child(data, "promote.activated")  # restarted: still the previous version; dies after the swap
    try:
        assert child.serving() == base
        assert httpx.get(f"{child.url}/v1/admin/models", headers=OP).json()["active"] == base
        with pytest.raises(httpx.HTTPError):
            httpx.post(f"{child.url}/v1/admin/models/{version}/promote", headers=OP, timeout=120)
        assert child.proc.wait(30) == -9
    finally:
        child.stop()
    assert persisted() == version

    child = Child(data, "none")  # the swap was persisted: the restart restores the new version
    try:
        assert child.serving() == version
        models = httpx.get(f"{child.url}/v1/admin/models", headers=OP).json()
        assert models["active"] == version and version in models["loaded"]
    finally:
        child.stop()

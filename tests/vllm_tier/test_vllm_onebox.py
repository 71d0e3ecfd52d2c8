"""The documented one-box command, `agentstack vllm serve` (= `make serve-vllm`), run as a user runs
it: it starts a local vLLM, serves agentstack in front of it, restarts vLLM when it dies (the
adapters then come back by themselves), and stops vLLM when it stops."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from agentstack.vllm_local.process import free_port
from tests.conftest import MODEL_CACHE
from tests.vllm_tier.vllm_support import lora, wait_until

pytestmark = pytest.mark.vllm
ROOT = Path(__file__).resolve().parents[2]


def vllm_pids(parent: int) -> list[int]:
    """The vLLM API servers started by process ``parent``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, IndexError, ValueError):
            continue
        if ppid == parent and "vllm.entrypoints.openai.api_server" in cmd:
            found.append(int(entry.name))
    return found


def healthy(url: str) -> bool:
    try:
        return httpx.get(url, timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


def chat(url: str, model: str) -> httpx.Response:
    return httpx.post(f"{url}/v1/chat/completions", timeout=300, json={
        "model": model, "messages": [{"role": "user", "content": "Describe the moon."}], "max_tokens": 12,
        "temperature": 0})


def test_one_box_serves_restarts_vllm_and_cleans_up(tmp_path, embedded_engine):
    port, vllm_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTSTACK_")}
    env.update({"AGENTSTACK_DATA_DIR": str(tmp_path / "data"), "AGENTSTACK_MODEL_CACHE": str(MODEL_CACHE),
                "AGENTSTACK_VLLM__PORT": str(vllm_port), "AGENTSTACK_ENGINE__ADAPTER_CHECK_S": "2",
                "AGENTSTACK_SERVER__BUILD_DEMO_INDEX": "false", "PYTHONPATH": str(ROOT)})
    log = open(tmp_path / "onebox.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen([sys.executable, "-m", "agentstack.cli", "vllm", "serve", "--port", str(port)], env=env,
                            cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url, vllm_health = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{vllm_port}/health"
    seen: set[int] = set()
    try:
        wait_until(lambda: proc.poll() is not None or healthy(f"{url}/readyz"), timeout=900, every=2)
        assert proc.poll() is None, (tmp_path / "onebox.log").read_text()[-3000:]
        seen.update(vllm_pids(proc.pid))
        assert len(seen) == 1
        first = chat(url, "agentstack")
        assert first.status_code == 200 and first.json()["model_version"] == "SmolLM2-135M-Instruct", first.text
        adapter = lora(embedded_engine, tmp_path / "adapter", seed=4)
        r = httpx.post(f"{url}/v1/load_lora_adapter", json={"lora_name": "hand", "lora_path": str(adapter)},
                       timeout=300)
        assert r.status_code == 200, r.text
        served = chat(url, "hand")
        assert served.status_code == 200

        (crashed,) = seen
        os.killpg(crashed, signal.SIGKILL)  # vLLM dies; the command restarts it
        new = wait_until(lambda: [p for p in vllm_pids(proc.pid) if p != crashed], timeout=60, every=1)
        seen.update(new)
        wait_until(lambda: healthy(vllm_health), timeout=900, every=1)
        healthy_at = time.monotonic()
        again = wait_until(lambda: (c := chat(url, "hand")).status_code == 200 and c, timeout=30, every=1)
        assert time.monotonic() - healthy_at <= 30
        assert again.json()["choices"][0]["message"]["content"] == served.json()["choices"][0]["message"]["content"]

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(120) == 0
        assert not healthy(vllm_health)  # vLLM stopped with it
        assert not [p for p in seen if Path(f"/proc/{p}").exists()]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(30)
        for pid in seen:
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        log.close()

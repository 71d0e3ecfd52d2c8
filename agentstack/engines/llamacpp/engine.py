"""The ``llamacpp`` chat engine: llama.cpp's server in this process, the default engine.

llama.cpp does the compute: continuous batching of every running request, per-request sampling
(seeded), LLGuidance grammars, LoRA adapters. agentstack keeps what makes engines interchangeable:
the chat template and token counting (a Hugging Face tokenizer built from the GGUF's vocabulary,
:mod:`.model_file`), request validation, the 429 admission limit, tool calling (``toolcalls.py``,
as for the torch engine), and the versions.

Versions: the base model plus LoRA adapters. Loading an adapter converts the PEFT directory to a
GGUF LoRA (:mod:`.lora`, cached) and starts a new llama.cpp instance holding every loaded adapter;
it replaces the current instance, which finishes the requests it is running and then stops
(:mod:`.instance`). A request is pinned to an instance and adapter index when admitted, so a swap
never changes the weights under it; rolling back to a version that is still loaded only moves a
pointer.

What does not hold here, unlike the torch engine: outputs are not batch-invariant (llama.cpp's
kernels depend on how many rows share a decode, so a seeded or greedy answer alone and inside a
batch can differ); ``min_tokens`` and ``stop_token_ids`` are refused.

This module knows nothing about HTTP or aliases.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import threading
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agentstack.config import EngineSettings
from agentstack.engines import toolcalls
from agentstack.engines.base import Capabilities, ChatRequest, StreamEvent, Usage
from agentstack.engines.local import GenerationError, LocalEngine
from agentstack.errors import ConflictError, EngineUnavailableError, InvalidRequestError, OverloadedError

log = logging.getLogger(__name__)


@dataclass
class Version:
    name: str
    parent: str | None
    path: str | None  # the PEFT directory (adapters) or the GGUF (base)
    lora: Path | None  # the converted GGUF LoRA
    loaded_at: float


class LlamaCppEngine(LocalEngine):
    kind = "llamacpp"
    capabilities = Capabilities(streaming=True, structured_output=True, tools=True, lora=True, logprobs=True)

    def __init__(self, settings: EngineSettings, model_cache: Path, metrics: Any = None):
        super().__init__(settings, model_cache, metrics)
        self.info: Any = None
        self.model_file: Path | None = None
        self._instance: Any = None
        self._swap = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None
        self._waiting = 0
        self._running = 0

    # -- lifecycle --------------------------------------------------------------------------------
    def warm_up(self) -> None:
        if self._instance is not None:
            return
        from agentstack.engines.llamacpp.instance import Instance
        from agentstack.engines.llamacpp.model_file import load_tokenizer, read_info, resolve_gguf

        started = time.perf_counter()
        s = self.settings
        if s.device == "cuda":
            raise EngineUnavailableError("the llamacpp engine runs on the CPU build of llama.cpp",
                                         fix="set AGENTSTACK_ENGINE__DEVICE=auto, or use engine.kind=openai (vLLM)")
        gguf, name = resolve_gguf(s.model)
        self.info = read_info(gguf, name)
        self.model_file, self.base_name = gguf, name
        self.tokenizer = load_tokenizer(gguf, self.model_cache, name)
        self._ctx = s.context_length or self.info.context_length
        self._pool = ThreadPoolExecutor(max_workers=s.max_running + s.max_queue + 2,
                                        thread_name_prefix="llamacpp-request")
        self._instance = Instance(gguf, [], n_ctx=self._n_ctx(), n_parallel=s.max_running, threads=s.threads,
                                  label=f"{name}#0").start()
        self._versions = {name: Version(name, None, str(gguf), None, time.time())}
        self.load_seconds = time.perf_counter() - started
        log.info("llamacpp engine ready: %s (%s) in %.2f s", name, self.info.file_type, self.load_seconds)

    def _n_ctx(self) -> int:
        # Twice the window by default: idle slots keep their prompts cached in the one unified cache,
        # and with only the window a full-length request beside them failed inside llama.cpp
        # ("Context size has been exceeded", test_engine_contract's cut-to-the-room test after others).
        # Each sequence is still capped at the model's window (engine.context_length).
        return max(self._ctx, self.settings.kv_cache_tokens or 2 * self._ctx)

    def attach_metrics(self, metrics: Any) -> None:
        self.metrics = metrics

    async def aclose(self) -> None:
        with self._lock:
            instance, self._instance = self._instance, None
        if instance is not None:
            await asyncio.to_thread(instance.retire)
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=False)
            self._pool = None

    def _require_ready(self) -> None:
        if self._instance is None:
            raise EngineUnavailableError("the llamacpp engine is not warmed up", fix="call engine.warm_up() first")

    def _admit(self, n: int, version: Version) -> tuple[Any, list[dict[str, Any]] | None]:
        s = self.settings
        capacity = s.max_running + s.max_queue
        with self._lock:
            if self._waiting + self._running + n > capacity:
                retry = 1 + math.ceil(self._waiting / max(1, s.max_running))
                raise OverloadedError(f"the engine is busy: {self._running} sequences running and {self._waiting} "
                                      f"waiting (capacity {capacity})", retry_after=retry,
                                      fix=f"retry after {retry} s, or raise AGENTSTACK_ENGINE__MAX_QUEUE")
            instance = self._instance
            if instance is None:
                raise EngineUnavailableError("the engine is shutting down", fix="retry against a running server")
            lora = None
            if instance.adapters:
                index = instance.adapters.index(version.lora) if version.lora is not None else -1
                lora = [{"id": i, "scale": 1.0 if i == index else 0.0} for i in range(len(instance.adapters))]
            instance.acquire()
            self._waiting += n
        self._report_depth()
        return instance, lora

    def _move(self, n: int, *, started: bool, ended: bool) -> None:
        with self._lock:
            if started:
                self._waiting -= n
                self._running += n
            if ended:
                self._running -= n
        self._report_depth()

    def _report_depth(self) -> None:
        if self.metrics is not None:
            self.metrics.set_depth(self._waiting, self._running)

    async def stream(self, request: ChatRequest) -> AsyncIterator[StreamEvent]:
        from agentstack.engines.llamacpp.grammar import compile_grammar
        from agentstack.engines.llamacpp.request import chunk_error, completion_body, logprobs_of

        prep = self._prepare(request)
        params, version, prompt, ids = request.params, prep.version, prep.prompt, prep.ids
        grammar = compile_grammar(self.tokenizer, prep.structured) if prep.structured is not None else None
        body = completion_body(params, ids, prep.max_new, grammar=grammar, lora=None)
        n = params.n
        instance, lora = self._admit(n, version)
        if lora is not None:
            body["lora"] = lora
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        stop = threading.Event()
        state = {"started": False}

        def put(item: tuple[str, Any]) -> None:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, item)
            except RuntimeError:  # the consumer's loop is gone; stop is set as well
                stop.set()

        def on_chunk(chunk: dict[str, Any]) -> bool:
            if stop.is_set():
                return True
            if not state["started"]:
                state["started"] = True
                self._move(n, started=True, ended=False)
            put(("chunk", chunk))
            return False

        def run() -> None:
            try:
                instance.generate(body, on_chunk)
            except BaseException as exc:  # delivered to the consumer
                put(("error", exc))
            finally:
                if not state["started"]:
                    self._move(n, started=True, ended=True)
                else:
                    self._move(n, started=False, ended=True)
                instance.release()
                put(("done", None))

        submitted = time.perf_counter()
        assert self._pool is not None
        self._pool.submit(run)
        calls = [toolcalls.CallCollector() if prep.tool_mode else None for _ in range(n)]
        finished = [False] * n
        completion, first, streamed = 0, True, [0] * n
        try:
            while True:
                kind, item = await queue.get()
                if kind == "done":
                    break
                if kind == "error":
                    raise GenerationError("generation failed inside llama.cpp; see the server log") from item
                error = chunk_error(item)
                if error is not None:
                    raise error
                if item.get("usage"):
                    completion = int(item["usage"].get("completion_tokens", completion))
                for choice in item.get("choices") or []:
                    index = int(choice.get("index", 0))
                    text, finish = choice.get("text") or "", choice.get("finish_reason")
                    logprobs = logprobs_of(choice, params.top_logprobs) if params.logprobs else None
                    if finish is None:
                        streamed[index] += 1  # llama.cpp streams one chunk per generated token
                    if self.metrics is not None:
                        if first and text:
                            first = False
                            self.metrics.on_first_token(time.perf_counter() - submitted)
                        if finish is None:
                            self.metrics.on_tokens(1)
                    found = None
                    if calls[index] is not None:
                        text, found = calls[index].feed(text, done=finish is not None)
                        if found:
                            finish = "tool_calls"
                    if finish:
                        finished[index] = True
                        if self.metrics is not None:
                            self.metrics.on_finish(finish)
                    if text or finish or logprobs:
                        yield StreamEvent(index=index, text=text, finish_reason=finish, tool_calls=found or None,
                                          logprobs=logprobs)
            if not all(finished):
                raise GenerationError("llama.cpp ended the stream without finishing every choice")
            if n > 1:  # llama.cpp's usage then counts one choice only
                completion = sum(streamed)
            yield StreamEvent(usage=Usage(prompt_tokens=len(ids), completion_tokens=completion),
                              model_version=version.name, rendered_prompt=prompt)
        finally:
            stop.set()
            if self.metrics is not None:
                for done in finished:
                    if not done:
                        self.metrics.on_finish("cancelled")

    # -- adapters ---------------------------------------------------------------------------------
    async def load_adapter(self, name: str, path: Path) -> None:
        path = self._check_new_adapter(name, path)
        from agentstack.engines.llamacpp.lora import converted_adapter

        assert self.model_file is not None
        lora = await asyncio.to_thread(converted_adapter, path, self.model_file, self.model_cache)
        await asyncio.to_thread(self._swap_in, name, Version(name, self.base_name, str(path), lora, time.time()))
        log.info("loaded adapter %s from %s", name, path)

    def _swap_in(self, name: str, version: Version) -> None:
        """Start an instance with every loaded adapter plus ``version``'s and make it current."""
        from agentstack.engines.llamacpp.instance import Instance

        with self._swap:  # one rebuild at a time; requests keep flowing to the current instance
            with self._lock:
                if name in self._versions:
                    raise ConflictError(f"a model named {name!r} was loaded concurrently", param="lora_name")
                adapters = [v.lora for v in self._versions.values() if v.lora is not None]
                current = self._instance
            adapters = list(dict.fromkeys([*adapters, version.lora]))
            assert self.model_file is not None and current is not None
            number = int(current.label.rsplit("#", 1)[1]) + 1
            try:
                new = Instance(self.model_file, adapters, n_ctx=self._n_ctx(), n_parallel=self.settings.max_running,
                               threads=self.settings.threads, label=f"{self.base_name}#{number}").start()
            except EngineUnavailableError as exc:
                raise InvalidRequestError(f"adapter {name} does not load on {self.base_name}: {exc}",
                                          param="lora_path", fix="load adapters trained on this exact base model") from exc
            with self._lock:
                self._versions[name] = version
                self._instance = new
        current.retire()  # it stops once the requests pinned to it have finished

    async def unload_adapter(self, name: str) -> None:
        self._forget_adapter(name, self.base_name)  # its weights leave memory when the next load rebuilds
        log.info("unloaded adapter %s", name)

    def served_format(self, name: str) -> dict[str, Any]:
        """How ``name`` is served: the model file and format, and the adapter's conversion record
        (converter version, source hash), for the registry."""
        from agentstack.engines.llamacpp.lora import conversion_record

        version = self._get(name)
        return {"engine": self.kind, "model_file": str(self.model_file), "format": self.info.file_type,
                "adapter": conversion_record(version.lora) if version.lora is not None else None}

    # -- figures ----------------------------------------------------------------------------------
    def llama_metrics(self) -> dict[str, float]:
        """llama.cpp's own counters for the current instance (``llamacpp:*`` in Prometheus text)."""
        instance = self._instance
        text = instance.metrics_text() if instance is not None else ""
        out: dict[str, float] = {}
        for match in re.finditer(r"^llamacpp:(\w+) ([0-9.eE+-]+)$", text, re.MULTILINE):
            out[match.group(1)] = float(match.group(2))
        return out

    def stats(self) -> dict[str, Any]:
        with self._lock:
            versions = sorted(self._versions)
            instance = self._instance
        return {"waiting": self._waiting, "running": self._running, "max_batch_size": self.settings.max_batch_size,
                "device": "cpu", "versions": versions, "model_file": str(self.model_file) if self.model_file else None,
                "format": self.info.file_type if self.info else None,
                "instance": instance.label if instance is not None else None}

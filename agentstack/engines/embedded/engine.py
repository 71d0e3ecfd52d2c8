"""The embedded chat engine: transformers in this process, batched by :mod:`.scheduler`.

It owns the tokenizer (chat template, token counting) and the loaded model versions: the base
model plus any LoRA adapters, each merged into its own copy of the base weights so that decoding
runs at base-model speed. A request is pinned to a version object when it is submitted; loading or
unloading an adapter swaps a dictionary entry under a lock and never touches a running sequence.

This module knows nothing about HTTP or aliases such as ``agentstack``; see ``engines/router.py``.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agentstack.config import EngineSettings
from agentstack.engines import toolcalls
from agentstack.engines.base import Capabilities, ChatRequest, ChatResult, ModelInfo, StreamEvent, Usage, collect
from agentstack.engines.messages import normalize_messages
from agentstack.engines.params import check_limits, resolve_max_tokens
from agentstack.errors import (AgentstackError, EngineUnavailableError, InvalidRequestError, ModelNotFoundError,
                               NotFoundError)

log = logging.getLogger(__name__)


class GenerationError(AgentstackError):
    code = "generation_failed"


@dataclass
class LoadedModel:
    name: str
    module: Any
    parent: str | None
    path: str | None
    loaded_at: float


class EmbeddedEngine:
    kind = "embedded"
    capabilities = Capabilities(streaming=True, structured_output=True, tools=True, lora=True, logprobs=True)

    def __init__(self, settings: EngineSettings, model_cache: Path, metrics: Any = None):
        self.settings = settings
        self.model_cache = Path(model_cache)
        self.metrics = metrics
        self.tokenizer: Any = None
        self.base_name = ""
        self.model_dir: Path | None = None
        self._versions: dict[str, LoadedModel] = {}
        self._lock = threading.Lock()
        self._scheduler: Any = None
        self._device: Any = None
        self._ctx = 0
        self._eos: frozenset[int] = frozenset()
        self._vocab = 0
        self.load_seconds: float | None = None

    # -- lifecycle --------------------------------------------------------------------------------
    def warm_up(self) -> None:
        if self._scheduler is not None:
            return
        from agentstack.compute import worker

        worker().run(self._load)

    def _load(self) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from agentstack.engines.embedded.scheduler import Scheduler
        from agentstack.engines.embedded.weights import resolve_model_dir

        started = time.perf_counter()
        s = self.settings
        if s.threads:
            torch.set_num_threads(s.threads)
        cuda = torch.cuda.is_available() and s.device in ("auto", "cuda")
        if s.device == "cuda" and not cuda:
            raise EngineUnavailableError("AGENTSTACK_ENGINE__DEVICE=cuda but no CUDA device is visible",
                                         fix="set AGENTSTACK_ENGINE__DEVICE=auto or cpu")
        self._device = torch.device("cuda" if cuda else "cpu")
        dtype = {"auto": torch.bfloat16 if cuda else torch.float32, "float32": torch.float32,
                 "bfloat16": torch.bfloat16, "float16": torch.float16}[s.dtype]
        model_dir, self.base_name = resolve_model_dir(s.model, self.model_cache)
        self.model_dir = model_dir
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        if self.tokenizer.chat_template is None:
            raise EngineUnavailableError(f"{model_dir} has no chat template",
                                         fix="use an instruction-tuned model whose tokenizer defines one")
        module = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype).to(self._device).eval()
        self._versions = {self.base_name: LoadedModel(self.base_name, module, None, str(model_dir), time.time())}
        self._ctx = s.context_length or int(getattr(module.config, "max_position_embeddings", 2048))
        self._vocab = int(module.config.vocab_size)
        eos = module.generation_config.eos_token_id
        eos_ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        if self.tokenizer.eos_token_id is not None:
            eos_ids.add(self.tokenizer.eos_token_id)
        self._eos = frozenset(eos_ids)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else min(eos_ids, default=0)
        self._scheduler = Scheduler(pad_id=pad, device=self._device, max_batch=s.max_batch_size,
                                    max_running=s.max_running, max_queue=s.max_queue, metrics=self.metrics)
        self._scheduler.start()
        self.load_seconds = time.perf_counter() - started
        log.info("embedded engine ready: %s on %s in %.2f s", self.base_name, self._device, self.load_seconds)

    def attach_metrics(self, metrics: Any) -> None:
        """Report to ``metrics`` from now on (a server sharing an already warm engine)."""
        self.metrics = metrics
        if self._scheduler is not None:
            self._scheduler.metrics = metrics

    async def aclose(self) -> None:
        if self._scheduler is not None:
            await asyncio.to_thread(self._scheduler.stop)
            self._scheduler = None

    def _require_ready(self) -> None:
        if self._scheduler is None:
            raise EngineUnavailableError("the embedded engine is not warmed up", fix="call engine.warm_up() first")

    # -- models -----------------------------------------------------------------------------------
    def models(self) -> list[ModelInfo]:
        with self._lock:
            versions = list(self._versions.values())
        return [ModelInfo(id=v.name, parent=v.parent, context_length=self._ctx, created=int(v.loaded_at),
                          path=v.path) for v in versions]

    def context_length(self, model: str) -> int:
        self._get(model)
        return self._ctx

    def _get(self, model: str) -> LoadedModel:
        with self._lock:
            found = self._versions.get(model)
            names = sorted(self._versions)
        if found is None:
            raise ModelNotFoundError(f"model {model!r} is not loaded; available: {', '.join(names)}",
                                     param="model", fix="use one of the listed model names")
        return found

    # -- tokens -----------------------------------------------------------------------------------
    def render(self, messages: list[dict[str, Any]]) -> tuple[str, list[int]]:
        self._require_ready()
        text = self.tokenizer.apply_chat_template(normalize_messages(messages), tokenize=False,
                                                  add_generation_prompt=True)
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        return text, list(ids)

    async def count_tokens(self, messages: list[dict[str, Any]], model: str) -> int:
        self._get(model)
        return len(self.render(messages)[1])

    async def count_text_tokens(self, text: str, model: str) -> int:
        self._require_ready()
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def truncate_text(self, text: str, max_tokens: int) -> str:
        """The longest prefix of ``text`` within ``max_tokens`` tokens, cut at a token boundary."""
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        if len(ids) <= max_tokens:
            return text
        return self.tokenizer.decode(ids[:max_tokens], skip_special_tokens=True)

    def _decode_token(self, token: int) -> str:
        return self.tokenizer.decode([token], skip_special_tokens=False)

    # -- generation -------------------------------------------------------------------------------
    async def chat(self, request: ChatRequest) -> ChatResult:
        return await collect(self.stream(request), request.params.n)

    async def stream(self, request: ChatRequest) -> AsyncIterator[StreamEvent]:
        from agentstack.engines.embedded.sampling import Sampler
        from agentstack.engines.embedded.scheduler import SeqEvent, Sequence
        from agentstack.engines.embedded.text import IncrementalText

        self._require_ready()
        params = request.params
        s = self.settings
        check_limits(params, max_tokens_limit=s.max_tokens_limit, max_n=s.max_n)
        version = self._get(request.model)
        messages, structured, tool_mode = request.messages, request.structured, False
        if request.tools or request.tool_choice not in (None, "auto", "none"):
            if structured is not None:
                raise InvalidRequestError("response_format/structured outputs cannot be combined with tools",
                                          param="response_format")
            messages, structured, tool_mode = toolcalls.prepare(messages, request.tools, request.tool_choice,
                                                                request.parallel_tool_calls is not False)
        prompt, ids = self.render(messages)
        max_new = resolve_max_tokens(params, prompt_tokens=len(ids), context_length=self._ctx,
                                     default_max_tokens=s.default_max_tokens)
        constraint = self._constraint(structured)
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[int, SeqEvent]] = asyncio.Queue()

        def sink_for(index: int):
            def sink(event: SeqEvent) -> None:
                try:
                    loop.call_soon_threadsafe(queue.put_nowait, (index, event))
                except RuntimeError:  # the consumer's loop is gone; the sequence is cancelled anyway
                    pass
            return sink

        seqs = []
        for i in range(params.n):
            mask_fn = advance_fn = None
            if constraint is not None:
                mask_fn, advance_fn = constraint.new_matcher()
            sampler = Sampler(params, self._eos, choice_index=i, mask_fn=mask_fn, advance_fn=advance_fn)
            seqs.append(Sequence(version=version.name, model=version.module, prompt_ids=ids, sampler=sampler,
                                 max_new_tokens=max_new, text=IncrementalText(self.tokenizer, params.stop),
                                 sink=sink_for(i), decode_token=self._decode_token,
                                 stop_token_ids=frozenset(params.stop_token_ids)))
        self._scheduler.submit(seqs)
        calls = [toolcalls.CallCollector() if tool_mode else None for _ in range(params.n)]
        try:
            remaining, completion = params.n, [0] * params.n
            while remaining:
                index, event = await queue.get()
                if event.error is not None:
                    if isinstance(event.error, AgentstackError):
                        raise event.error
                    raise GenerationError("generation failed inside the engine; see the server log") from event.error
                completion[index] = event.completion_tokens
                if event.finish_reason:
                    remaining -= 1
                text, finish, found = event.text, event.finish_reason, None
                if calls[index] is not None:
                    text, found = calls[index].feed(text, done=finish is not None)
                    if found:
                        finish = "tool_calls"
                if text or finish or event.logprob is not None:
                    yield StreamEvent(index=index, text=text, finish_reason=finish, tool_calls=found or None,
                                      logprobs=[event.logprob] if event.logprob is not None else None)
            yield StreamEvent(usage=Usage(prompt_tokens=len(ids), completion_tokens=sum(completion)),
                              model_version=version.name, rendered_prompt=prompt)
        finally:
            for seq in seqs:
                seq.cancel()

    def _constraint(self, structured: Any) -> Any:
        if structured is None:
            return None
        from agentstack.engines.embedded.constrained import compile_constraint

        return compile_constraint(self.tokenizer, structured, self._eos, self._vocab)

    # -- adapters ---------------------------------------------------------------------------------
    async def load_adapter(self, name: str, path: Path) -> None:
        """Load (or reload in place: idempotent, like vLLM's ``load_inplace``) adapter ``name``.
        Sequences already running keep the weights they started with."""
        self._require_ready()
        if name == self.base_name:
            raise InvalidRequestError(f"the adapter name {name!r} conflicts with the base model", param="lora_name",
                                      fix="pick another name")
        path = Path(path)
        if not (path / "adapter_config.json").is_file():
            raise NotFoundError(f"no LoRA adapter at {path} (adapter_config.json missing)", param="lora_path",
                                fix="give the directory written by the trainer or by peft's save_pretrained")
        from agentstack.compute import worker

        module = await worker().arun(self._merge_adapter, path)
        with self._lock:
            self._versions[name] = LoadedModel(name, module, self.base_name, str(path), time.time())
        log.info("loaded adapter %s from %s", name, path)

    def _merge_adapter(self, path: Path) -> Any:
        from peft import PeftModel

        base = self._versions[self.base_name].module
        try:
            peft_model = PeftModel.from_pretrained(copy.deepcopy(base), str(path))
            merged = peft_model.merge_and_unload()
        except (ValueError, RuntimeError, KeyError, OSError) as exc:
            raise InvalidRequestError(f"adapter at {path} does not fit the base model {self.base_name}: {exc}",
                                      param="lora_path",
                                      fix="load adapters trained on this exact base model") from exc
        return merged.eval()

    async def unload_adapter(self, name: str) -> None:
        with self._lock:
            if name == self.base_name:
                raise InvalidRequestError("the base model cannot be unloaded", param="lora_name")
            if name not in self._versions:
                raise ModelNotFoundError(f"no adapter named {name!r} is loaded", param="lora_name")
            del self._versions[name]  # running sequences keep their own reference
        log.info("unloaded adapter %s", name)

    def stats(self) -> dict[str, Any]:
        sched = self._scheduler
        return {"waiting": sched.waiting if sched else 0, "running": sched.running if sched else 0,
                "steps": sched.steps if sched else 0,
                "max_forwards_per_step": sched.max_forwards_per_step if sched else 0,
                "max_batch_size": self.settings.max_batch_size, "device": str(self._device),
                "versions": sorted(self._versions)}

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
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agentstack.config import EngineSettings
from agentstack.engines import toolcalls
from agentstack.engines.base import Capabilities, ChatRequest, StreamEvent, Usage
from agentstack.engines.local import GenerationError, LocalEngine
from agentstack.errors import AgentstackError, ConflictError, EngineUnavailableError, InvalidRequestError

log = logging.getLogger(__name__)


@dataclass
class LoadedModel:
    name: str
    module: Any
    parent: str | None
    path: str | None
    loaded_at: float


class EmbeddedEngine(LocalEngine):
    kind = "embedded"
    capabilities = Capabilities(streaming=True, structured_output=True, tools=True, lora=True, logprobs=True)

    def __init__(self, settings: EngineSettings, model_cache: Path, metrics: Any = None):
        super().__init__(settings, model_cache, metrics)
        self.model_dir: Path | None = None
        self._scheduler: Any = None
        self._device: Any = None
        self._eos: frozenset[int] = frozenset()
        self._vocab = 0

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

    def _decode_token(self, token: int) -> str:
        return self.tokenizer.decode([token], skip_special_tokens=False)

    # -- generation -------------------------------------------------------------------------------
    async def stream(self, request: ChatRequest) -> AsyncIterator[StreamEvent]:
        from agentstack.engines.embedded.sampling import Sampler
        from agentstack.engines.embedded.scheduler import SeqEvent, Sequence
        from agentstack.engines.embedded.text import IncrementalText

        prep = self._prepare(request)
        params, version, prompt, ids, max_new = request.params, prep.version, prep.prompt, prep.ids, prep.max_new
        constraint = self._constraint(prep.structured)
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
        calls = [toolcalls.CallCollector() if prep.tool_mode else None for _ in range(params.n)]
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
        path = self._check_new_adapter(name, path)
        from agentstack.compute import worker

        module = await worker().arun(self._merge_adapter, path)
        with self._lock:
            if name in self._versions:
                raise ConflictError(f"a model named {name!r} was loaded concurrently", param="lora_name")
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
        self._forget_adapter(name, self.base_name)
        log.info("unloaded adapter %s", name)

    def stats(self) -> dict[str, Any]:
        sched = self._scheduler
        return {"waiting": sched.waiting if sched else 0, "running": sched.running if sched else 0,
                "steps": sched.steps if sched else 0,
                "max_forwards_per_step": sched.max_forwards_per_step if sched else 0,
                "max_batch_size": self.settings.max_batch_size, "device": str(self._device),
                "versions": sorted(self._versions)}

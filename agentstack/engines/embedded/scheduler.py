"""Continuous batching, stepped by the process's compute worker (see ``agentstack/compute.py``).

Requests become :class:`Sequence` objects (one per choice). Each ``step()``:

1. admit waiting sequences up to ``max_running``, prefill them in batches (grouped by model
   version, at most ``max_batch`` rows and ``prefill_tokens`` padded tokens per forward), sample each
   one's first token and merge them into decode groups;
2. run one decode step: one forward per group, where a group holds at most ``max_batch`` rows of one
   model version. Groups are rebalanced so that N running sequences of a version use
   ⌈N / max_batch⌉ forwards per step;
3. sample each row with its own sampler, release text, and drop finished or cancelled rows.

Sequences of different model versions never share a forward pass, so a hot swap never changes the
weights under a request already running. Requests that arrive while the queue is full are refused
at once (:class:`OverloadedError`), never silently dropped. A failing forward pass fails only the
sequences in that group; the loop goes on.

This module knows nothing about HTTP, chat templates or asyncio; results leave through each
sequence's ``sink`` callback.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from agentstack.engines.base import TokenLogprob
from agentstack.engines.embedded.batch import KVGroup
from agentstack.engines.embedded.sampling import Sampler
from agentstack.engines.embedded.text import IncrementalText
from agentstack.errors import EngineUnavailableError, OverloadedError

log = logging.getLogger(__name__)


@dataclass
class SeqEvent:
    text: str = ""
    finish_reason: str | None = None
    logprob: TokenLogprob | None = None
    error: BaseException | None = None
    completion_tokens: int = 0


@dataclass(eq=False)
class Sequence:
    version: str
    model: Any
    prompt_ids: list[int]
    sampler: Sampler
    max_new_tokens: int
    text: IncrementalText
    sink: Callable[[SeqEvent], None]
    decode_token: Callable[[int], str]
    stop_token_ids: frozenset[int] = frozenset()
    out_ids: list[int] = field(default_factory=list)
    cancelled: threading.Event = field(default_factory=threading.Event)
    finished: bool = False
    submitted_at: float = field(default_factory=time.perf_counter)
    first_token_at: float | None = None

    def cancel(self) -> None:
        self.cancelled.set()


class SchedulerMetrics(Protocol):
    def on_step(self, batch_sizes: list[int]) -> None: ...
    def on_prefill(self, rows: int, tokens: int) -> None: ...
    def on_tokens(self, n: int) -> None: ...
    def on_first_token(self, seconds: float) -> None: ...
    def on_finish(self, reason: str) -> None: ...
    def set_depth(self, waiting: int, running: int) -> None: ...


@dataclass(eq=False)
class _Group:
    kv: KVGroup
    seqs: list[Sequence]


class Scheduler:
    def __init__(self, *, pad_id: int, device: torch.device, max_batch: int, max_running: int, max_queue: int,
                 prefill_tokens: int = 4096, metrics: SchedulerMetrics | None = None):
        self.pad_id = pad_id
        self.device = device
        self.max_batch = max_batch
        self.max_running = max_running
        self.max_queue = max_queue
        self.prefill_tokens = prefill_tokens
        self.metrics = metrics
        self._waiting: deque[Sequence] = deque()
        self._groups: list[_Group] = []
        self._lock = threading.Lock()
        self._stopping = False
        self.steps = 0
        self.max_forwards_per_step = 0

    # -- public -----------------------------------------------------------------------------------
    @property
    def running(self) -> int:
        return sum(len(g.seqs) for g in self._groups)

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def start(self) -> None:
        from agentstack.compute import worker

        self._stopping = False
        worker().add_loop(self)

    def stop(self) -> None:
        """Unregister from the compute worker and fail whatever is still queued or running."""
        from agentstack.compute import worker

        def shutdown() -> None:
            worker().remove_loop(self)
            with self._lock:
                self._stopping = True
                pending = list(self._waiting) + [s for g in self._groups for s in g.seqs]
                self._waiting.clear()
                self._groups.clear()
            self._fail(pending, EngineUnavailableError("the engine shut down before this request finished"))

        worker().run(shutdown)

    def submit(self, seqs: list[Sequence]) -> None:
        """Queue the sequences of one request, all or none."""
        with self._lock:
            if self._stopping:
                raise EngineUnavailableError("the engine is shutting down", fix="retry against a running server")
            capacity = self.max_running + self.max_queue
            if self.running + len(self._waiting) + len(seqs) > capacity:
                retry = 1 + math.ceil(len(self._waiting) / max(1, self.max_batch))
                raise OverloadedError(f"the engine is busy: {self.running} sequences running and "
                                      f"{len(self._waiting)} waiting (capacity {capacity})", retry_after=retry,
                                      fix=f"retry after {retry} s, or raise AGENTSTACK_ENGINE__MAX_QUEUE")
            self._waiting.extend(seqs)
            self._report_depth()
        from agentstack.compute import worker

        worker().wake()

    # -- one iteration, driven by the compute worker ---------------------------------------------
    def has_work(self) -> bool:
        return bool(self._waiting) or bool(self._groups)

    def step(self) -> None:
        with self._lock:
            room = self.max_running - self.running
            admit = [self._waiting.popleft() for _ in range(min(room, len(self._waiting)))]
        try:
            if admit:
                self._admit([s for s in admit if not self._drop_if_cancelled(s)])
            if self._groups:
                self._decode_step()
        except Exception as exc:  # fail what was in flight; the next step starts clean
            log.exception("scheduler iteration failed")
            for group in self._groups:
                self._fail(group.seqs, exc)
            self._groups.clear()
        with self._lock:
            self._report_depth()

    def _report_depth(self) -> None:
        if self.metrics is not None:
            self.metrics.set_depth(len(self._waiting), self.running)

    def _drop_if_cancelled(self, seq: Sequence) -> bool:
        if seq.cancelled.is_set():
            self._finish(seq, SeqEvent(finish_reason="cancelled"))
            return True
        return False

    def _admit(self, seqs: list[Sequence]) -> None:
        by_model: dict[int, list[Sequence]] = {}
        for seq in seqs:
            by_model.setdefault(id(seq.model), []).append(seq)
        for batch in by_model.values():
            for chunk in self._prefill_chunks(batch):
                self._prefill(chunk)
            self._rebalance(batch[0].model)

    def _prefill_chunks(self, seqs: list[Sequence]) -> list[list[Sequence]]:
        chunks: list[list[Sequence]] = []
        current: list[Sequence] = []
        for seq in sorted(seqs, key=lambda s: len(s.prompt_ids)):
            width = len(seq.prompt_ids)
            if current and (len(current) >= self.max_batch or width * (len(current) + 1) > self.prefill_tokens):
                chunks.append(current)
                current = []
            current.append(seq)
        if current:
            chunks.append(current)
        return chunks

    def _prefill(self, seqs: list[Sequence]) -> None:
        model = seqs[0].model
        try:
            kv, logits = KVGroup.prefill(model, [s.prompt_ids for s in seqs], self.pad_id, self.device)
        except Exception as exc:
            log.exception("prefill failed for %d sequences", len(seqs))
            self._fail(seqs, exc)
            return
        if self.metrics is not None:
            self.metrics.on_prefill(len(seqs), kv.width * len(seqs))
        group = _Group(kv, seqs)
        self._sample(group, logits)
        if group.seqs:
            target = next((g for g in self._groups if g.kv.model is model
                           and len(g.seqs) + len(group.seqs) <= self.max_batch), None)
            if target is None:
                self._groups.append(group)
            else:
                target.kv.merge(group.kv)
                target.seqs.extend(group.seqs)

    def _rebalance(self, model: Any) -> None:
        """Repack a version's groups if they use more forwards than ⌈N / max_batch⌉."""
        mine = [g for g in self._groups if g.kv.model is model]
        total = sum(len(g.seqs) for g in mine)
        if len(mine) <= max(1, math.ceil(total / self.max_batch)):
            return
        base = mine[0]
        for other in mine[1:]:
            base.kv.merge(other.kv)
            base.seqs.extend(other.seqs)
            self._groups.remove(other)
        while len(base.seqs) > self.max_batch:
            rows = list(range(self.max_batch, len(base.seqs)))
            new = _Group(base.kv.split(rows), base.seqs[self.max_batch:])
            base.seqs = base.seqs[:self.max_batch]
            self._groups.append(new)
            base = new

    def _decode_step(self) -> None:
        sizes: list[int] = []
        touched: dict[int, Any] = {}
        for group in list(self._groups):
            live = [i for i, s in enumerate(group.seqs) if not s.cancelled.is_set()]
            if len(live) < len(group.seqs):
                for s in group.seqs:
                    if s.cancelled.is_set():
                        self._finish(s, SeqEvent(finish_reason="cancelled", completion_tokens=len(s.out_ids)))
                touched[id(group.kv.model)] = group.kv.model
                self._shrink(group, live)
                if not group.seqs:
                    continue
            tokens = torch.tensor([s.out_ids[-1] for s in group.seqs], dtype=torch.long)
            try:
                logits = group.kv.step(tokens)
            except Exception as exc:
                log.exception("decode step failed for a group of %d", len(group.seqs))
                self._fail(group.seqs, exc)
                self._groups.remove(group)
                continue
            sizes.append(len(group.seqs))
            before = len(group.seqs)
            self._sample(group, logits)
            if len(group.seqs) < before:
                touched[id(group.kv.model)] = group.kv.model
        for model in touched.values():
            self._rebalance(model)
        self.steps += 1
        self.max_forwards_per_step = max(self.max_forwards_per_step, len(sizes))
        if self.metrics is not None and sizes:
            self.metrics.on_step(sizes)

    def _shrink(self, group: _Group, rows: list[int]) -> None:
        if not rows:
            self._groups.remove(group)
            group.seqs = []
            return
        group.kv.keep(rows)
        group.seqs = [group.seqs[i] for i in rows]

    def _sample(self, group: _Group, logits: torch.Tensor) -> None:
        argmax = logits.argmax(dim=-1).tolist()
        keep: list[int] = []
        for row, seq in enumerate(group.seqs):
            try:
                done = self._advance(seq, logits[row], argmax[row])
            except Exception as exc:  # e.g. a structured-decoding failure: fail this row only
                log.exception("sampling failed")
                self._fail([seq], exc)
                done = True
            if not done:
                keep.append(row)
        if self.metrics is not None:
            self.metrics.on_tokens(len(group.seqs))
        if len(keep) < len(group.seqs):
            if group in self._groups:
                self._shrink(group, keep)
            else:
                if keep:
                    group.kv.keep(keep)
                group.seqs = [group.seqs[i] for i in keep]

    def _advance(self, seq: Sequence, logits: torch.Tensor, argmax: int) -> bool:
        sampler = seq.sampler
        logprob = None
        if sampler.plain_greedy:
            token = argmax
        else:
            processed = sampler.process(logits, seq.prompt_ids, seq.out_ids)
            token = sampler.choose(processed)
            if sampler.params.logprobs:
                logprob = sampler.logprobs(processed, token, seq.decode_token)
        seq.out_ids.append(token)
        if sampler.advance_fn is not None:
            sampler.advance_fn(token)
        if seq.first_token_at is None:
            seq.first_token_at = time.perf_counter()
            if self.metrics is not None:
                self.metrics.on_first_token(seq.first_token_at - seq.submitted_at)
        finish = None
        if token in sampler.eos_ids and not sampler.params.ignore_eos:
            text, finish = seq.text.flush(), "stop"
        else:
            text = seq.text.push(token)
            if seq.text.stopped:
                finish = "stop"
            elif token in seq.stop_token_ids:
                text, finish = text + seq.text.flush(), "stop"
            elif len(seq.out_ids) >= seq.max_new_tokens:
                text, finish = text + seq.text.flush(), "length"
        if finish is not None:
            self._finish(seq, SeqEvent(text=text, finish_reason=finish, logprob=logprob,
                                       completion_tokens=len(seq.out_ids)))
            return True
        if text or logprob is not None:
            seq.sink(SeqEvent(text=text, logprob=logprob, completion_tokens=len(seq.out_ids)))
        return False

    def _finish(self, seq: Sequence, event: SeqEvent) -> None:
        seq.finished = True
        if self.metrics is not None and event.finish_reason:
            self.metrics.on_finish(event.finish_reason)
        seq.sink(event)

    def _fail(self, seqs: list[Sequence], exc: BaseException) -> None:
        for seq in seqs:
            if not seq.finished:
                seq.finished = True
                if self.metrics is not None:
                    self.metrics.on_finish("error")
                seq.sink(SeqEvent(error=exc, finish_reason="error", completion_tokens=len(seq.out_ids)))

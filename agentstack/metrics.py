"""Prometheus metrics for the engine and the server, on a registry the caller owns.

Each server (and each test app) gets its own ``CollectorRegistry``, so two apps in one process never
collide. The scheduler reports through :class:`EngineMetrics`, which satisfies its
``SchedulerMetrics`` protocol.
"""

from __future__ import annotations

import threading
import time
from collections import deque

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 128, 256)
FORWARD_BUCKETS = (1, 2, 3, 4, 6, 8, 16)


class EngineMetrics:
    def __init__(self, registry: CollectorRegistry, window_s: float = 10.0):
        self.registry = registry
        self.queue_depth = Gauge("agentstack_engine_queue_depth", "Requests waiting for a slot.", registry=registry)
        self.running = Gauge("agentstack_engine_running_sequences", "Sequences generating now.", registry=registry)
        self.batch_size = Histogram("agentstack_engine_batch_size", "Rows per decode forward pass.",
                                    buckets=BATCH_BUCKETS, registry=registry)
        self.forwards_per_step = Histogram("agentstack_engine_forwards_per_step",
                                           "Forward passes in one decode step (one per group).",
                                           buckets=FORWARD_BUCKETS, registry=registry)
        self.prefill_rows = Histogram("agentstack_engine_prefill_batch_size", "Rows per prefill forward pass.",
                                      buckets=BATCH_BUCKETS, registry=registry)
        self.generated = Counter("agentstack_engine_generated_tokens", "Tokens generated.", registry=registry)
        self.prefilled = Counter("agentstack_engine_prefill_tokens", "Padded prompt tokens prefilled.",
                                 registry=registry)
        self.finished = Counter("agentstack_engine_sequences_finished", "Finished sequences by reason.",
                                ["reason"], registry=registry)
        self.ttft = Histogram("agentstack_engine_time_to_first_token_seconds", "Queue + prefill time.",
                              buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32), registry=registry)
        self.tokens_per_second = Gauge("agentstack_engine_tokens_per_second",
                                       f"Generated tokens per second over the last {window_s:g} s.",
                                       registry=registry)
        self.active_version = Gauge("agentstack_active_model_version", "1 for the version the served alias "
                                    "points at.", ["version"], registry=registry)
        self._window_s = window_s
        self._recent: deque[tuple[float, int]] = deque()
        self._lock = threading.Lock()
        self.tokens_per_second.set_function(self._rate)

    # SchedulerMetrics -------------------------------------------------------------------------
    def on_step(self, batch_sizes: list[int]) -> None:
        self.forwards_per_step.observe(len(batch_sizes))
        for size in batch_sizes:
            self.batch_size.observe(size)

    def on_prefill(self, rows: int, tokens: int) -> None:
        self.prefill_rows.observe(rows)
        self.prefilled.inc(tokens)

    def on_tokens(self, n: int) -> None:
        self.generated.inc(n)
        now = time.monotonic()
        with self._lock:
            self._recent.append((now, n))

    def on_first_token(self, seconds: float) -> None:
        self.ttft.observe(seconds)

    def on_finish(self, reason: str) -> None:
        self.finished.labels(reason=reason).inc()

    def set_depth(self, waiting: int, running: int) -> None:
        self.queue_depth.set(waiting)
        self.running.set(running)

    # ------------------------------------------------------------------------------------------
    def set_active_version(self, version: str) -> None:
        self.active_version.clear()
        self.active_version.labels(version=version).set(1)

    def _rate(self) -> float:
        cutoff = time.monotonic() - self._window_s
        with self._lock:
            while self._recent and self._recent[0][0] < cutoff:
                self._recent.popleft()
            return sum(n for _, n in self._recent) / self._window_s

"""``SharedState`` held in this process: the embedded default (one replica, no service to run).

This module knows nothing about HTTP or Redis.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

MAX_CLIENTS = 10_000


class MemoryState:
    def __init__(self, clock: Any = time.monotonic, wall: Any = time.time):
        self._clock = clock
        self._wall = wall
        self._lock = threading.Lock()
        self._buckets: dict[str, tuple[float, float]] = {}
        self._failures: dict[str, list[float]] = {}
        self._revoked: dict[str, float] = {}
        self._subscribers: list[tuple[asyncio.AbstractEventLoop, asyncio.Queue, frozenset[str]]] = []

    def take(self, bucket: str, capacity: float, per_second: float) -> float:
        now = self._clock()
        with self._lock:
            tokens, last = self._buckets.get(bucket, (capacity, now))
            tokens = min(capacity, tokens + (now - last) * per_second)
            if tokens < 1.0:
                self._buckets[bucket] = (tokens, now)
                return (1.0 - tokens) / per_second
            self._buckets[bucket] = (tokens - 1.0, now)
            return 0.0

    def _recent(self, client: str, now: float, window_s: float) -> list[float]:
        recent = [t for t in self._failures.get(client, ()) if now - t < window_s]
        if recent:
            self._failures[client] = recent
        else:
            self._failures.pop(client, None)
        return recent

    def failures(self, client: str, window_s: float) -> tuple[int, float]:
        now = self._clock()
        with self._lock:
            recent = self._recent(client, now, window_s)
        return len(recent), (now - recent[0]) if recent else 0.0

    def add_failure(self, client: str, window_s: float) -> None:
        now = self._clock()
        with self._lock:
            if len(self._failures) > MAX_CLIENTS:  # bound memory under a flood of addresses
                for stale in [c for c, ts in self._failures.items() if now - ts[-1] >= window_s]:
                    del self._failures[stale]
            self._recent(client, now, window_s)
            self._failures.setdefault(client, []).append(now)

    def revoke(self, sid: str, expires_at: float) -> None:
        now = self._wall()
        with self._lock:
            self._revoked = {s: exp for s, exp in self._revoked.items() if exp > now}
            self._revoked[sid] = expires_at

    def revoked(self, sid: str) -> bool:
        with self._lock:
            return sid in self._revoked

    def publish(self, channel: str, message: dict[str, Any]) -> None:
        with self._lock:
            targets = [(loop, q) for loop, q, channels in self._subscribers if channel in channels]
        for loop, queue in targets:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, (channel, dict(message)))
            except RuntimeError:  # that loop has closed
                pass

    async def subscribe(self, *channels: str) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        queue: asyncio.Queue = asyncio.Queue()
        entry = (asyncio.get_running_loop(), queue, frozenset(channels))
        with self._lock:
            self._subscribers.append(entry)
        try:
            while True:
                yield await queue.get()
        finally:
            with self._lock:
                self._subscribers.remove(entry)

    def close(self) -> None:
        pass

"""The ``SharedState`` protocol: rate limits, wrong-key counters, session revocation and change
notices, with one implementation per deployment shape.

* ``MemoryState`` (``memory.py``): in this process; right for one replica, the embedded default.
* ``RedisState`` (``redis_state.py``): in Redis (``state.redis_url``), atomic with Lua scripts, so a
  limit of N per minute is N across every replica, a wrong key counts on all of them, and a
  signed-out session is refused everywhere.

Time inside Redis is Redis's own clock (``TIME``), so replicas whose clocks differ still agree.
Notices are fire-and-forget pub/sub: a replica that misses one catches up from the database on its
next heartbeat, so they only make changes arrive sooner, never decide what is true.

This module knows nothing about HTTP or the database.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Protocol

MODEL_CHANNEL = "agentstack:model"
INDEX_CHANNEL = "agentstack:index"


class SharedState(Protocol):
    """Short-lived state; every method is safe to call from several threads."""

    def take(self, bucket: str, capacity: float, per_second: float) -> float:
        """Take one token from the bucket ``bucket`` (refilled at ``per_second`` up to ``capacity``).
        Returns 0.0 when taken, else the seconds until one is available (nothing is taken)."""
        ...

    def failures(self, client: str, window_s: float) -> tuple[int, float]:
        """How many failures ``client`` had in the last ``window_s`` seconds, and the age of the oldest."""
        ...

    def add_failure(self, client: str, window_s: float) -> None:
        """Count one failure for ``client`` (forgotten after ``window_s``)."""
        ...

    def revoke(self, sid: str, expires_at: float) -> None:
        """Revoke session ``sid`` until it would have expired anyway (Unix time)."""
        ...

    def revoked(self, sid: str) -> bool:
        ...

    def publish(self, channel: str, message: dict[str, Any]) -> None:
        """Tell every replica (this one included) about a change."""
        ...

    def subscribe(self, *channels: str) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        """The notices on ``channels`` as (channel, message), until cancelled."""
        ...

    def close(self) -> None:
        ...


def build_state(settings: Any) -> SharedState:
    """Redis when ``state.redis_url`` is set, else this process's memory."""
    if settings.state.redis_url is not None:
        from agentstack.state.redis_state import RedisState

        return RedisState(settings.state.redis_url.get_secret_value())
    from agentstack.state.memory import MemoryState

    return MemoryState()

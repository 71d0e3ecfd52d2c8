"""``SharedState`` in Redis (redis-py): what several API replicas must agree on.

* rate limits: a token bucket per key in a hash, refilled and taken in one Lua script (atomic, on
  Redis's clock);
* wrong-key counters: a sorted set of failure times per client address, trimmed to the window;
* session revocation: a key per revoked session id that expires with the session;
* notices: ``PUBLISH`` on a channel; :meth:`subscribe` listens with ``redis.asyncio``.

Keys are prefixed ``agentstack:`` and all expire, so Redis needs no cleaning and no persistence.
A Redis that cannot be reached makes the calls that need it fail (503 from the server): limits are
never silently lifted.

This module knows nothing about HTTP or the database.
"""

from __future__ import annotations

import functools
import json
import secrets
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

from agentstack.errors import ConfigError

PREFIX = "agentstack:"
F = TypeVar("F", bound=Callable[..., Any])


class StateUnavailableError(ConfigError):
    """Redis could not be reached (503): the request is refused rather than let through unchecked."""

    code = "state_unavailable"


def _guarded(method: F) -> F:
    @functools.wraps(method)
    def call(self: "RedisState", *args: Any, **kwargs: Any) -> Any:
        import redis

        try:
            return method(self, *args, **kwargs)
        except redis.RedisError as exc:
            raise StateUnavailableError(f"shared state (Redis at {self.where}) is unavailable: "
                                        f"{type(exc).__name__}", fix="start Redis or correct state.redis_url; "
                                        "requests resume once it answers") from None

    return call  # type: ignore[return-value]

_TAKE = """
local capacity = tonumber(ARGV[1])
local rate = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local data = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(data[1]) or capacity
local ts = tonumber(data[2]) or now
tokens = math.min(capacity, tokens + math.max(0, now - ts) * rate)
local wait = 0
if tokens < 1 then wait = (1 - tokens) / rate else tokens = tokens - 1 end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
redis.call('EXPIRE', KEYS[1], math.ceil(capacity / rate) + 1)
return tostring(wait)
"""

_FAILURES = """
local window = tonumber(ARGV[1])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
if ARGV[2] == 'add' then
  redis.call('ZADD', KEYS[1], now, ARGV[3])
  redis.call('EXPIRE', KEYS[1], math.ceil(window) + 1)
end
local n = redis.call('ZCARD', KEYS[1])
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
local age = 0
if oldest[2] then age = now - tonumber(oldest[2]) end
return {n, tostring(age)}
"""


class RedisState:
    def __init__(self, url: str):
        import redis

        self.url = url
        self.where = url.split("@")[-1]  # no password in messages
        self.client = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5, health_check_interval=30)
        self._take = self.client.register_script(_TAKE)
        self._failures = self.client.register_script(_FAILURES)

    @_guarded
    def take(self, bucket: str, capacity: float, per_second: float) -> float:
        return float(self._take(keys=[f"{PREFIX}bucket:{bucket}"], args=[capacity, per_second]))

    @_guarded
    def failures(self, client: str, window_s: float) -> tuple[int, float]:
        n, age = self._failures(keys=[f"{PREFIX}fail:{client}"], args=[window_s, "check", ""])
        return int(n), float(age)

    @_guarded
    def add_failure(self, client: str, window_s: float) -> None:
        self._failures(keys=[f"{PREFIX}fail:{client}"], args=[window_s, "add", secrets.token_hex(8)])

    @_guarded
    def revoke(self, sid: str, expires_at: float) -> None:
        self.client.set(f"{PREFIX}revoked:{sid}", b"1", exat=max(int(expires_at) + 1, 1))

    @_guarded
    def revoked(self, sid: str) -> bool:
        return bool(self.client.exists(f"{PREFIX}revoked:{sid}"))

    @_guarded
    def publish(self, channel: str, message: dict[str, Any]) -> None:
        self.client.publish(channel, json.dumps(message))

    async def subscribe(self, *channels: str) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        import redis.asyncio as aioredis

        client = aioredis.Redis.from_url(self.url, socket_connect_timeout=5, health_check_interval=30)
        pubsub = client.pubsub(ignore_subscribe_messages=True)
        try:
            await pubsub.subscribe(*channels)
            async for item in pubsub.listen():
                if item.get("type") != "message":
                    continue
                try:
                    message = json.loads(item["data"])
                except (TypeError, ValueError):
                    continue
                channel = item["channel"].decode() if isinstance(item["channel"], bytes) else item["channel"]
                yield channel, message
        finally:
            await pubsub.aclose()
            await client.aclose()

    def close(self) -> None:
        self.client.close()

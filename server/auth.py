"""API keys, roles and per-key rate limits.

Keys come from settings (``auth.keys``); only their SHA-256 digests are kept in memory, and a
config file may hold the digest instead of the key. A caller is a :class:`Principal`: the key id,
its role, and the end user the app names in ``X-User-Id``. Roles are ordered: an ``operator`` may
do everything an ``app`` may.

With no keys configured the server is in local development mode: it binds only to loopback
(``server/app.py`` refuses anything else) and every caller is the local operator.

The rate-limit buckets and wrong-key counters live in a :class:`~agentstack.state.SharedState`:
this process's memory by default, Redis when replicas share state (so a limit holds across all).
"""

from __future__ import annotations

import hashlib
import re
import time
from dataclasses import dataclass
from typing import Any

from agentstack.config import ApiKey, AuthSettings
from agentstack.errors import AuthError, InvalidRequestError, RateLimitedError

ROLES = {"app": 1, "operator": 2}
USER_ID = re.compile(r"^[A-Za-z0-9_.@:+-]{1,128}$")
LOCAL_KEY_ID = "local"


@dataclass(frozen=True)
class Principal:
    key_id: str
    role: str
    user_id: str = "-"
    indexes: tuple[str, ...] | None = None  # None: every index
    local: bool = False

    def has(self, role: str) -> bool:
        return ROLES[self.role] >= ROLES[role]

    def may_read_index(self, name: str) -> bool:
        return self.indexes is None or name in self.indexes


FAILURE_WINDOW_S = 60.0


class KeyStore:
    def __init__(self, settings: AuthSettings, state: Any = None):
        from agentstack.state.memory import MemoryState

        self._by_digest: dict[str, ApiKey] = {k.digest: k for k in settings.keys}
        self._max_failed = settings.max_failed_per_minute
        # buckets and wrong-key counters (clock looked up per call, so tests can move time)
        self._state = state if state is not None else MemoryState(clock=lambda: time.monotonic())

    @property
    def open(self) -> bool:
        """No keys configured: local development mode."""
        return not self._by_digest

    def authenticate(self, token: str | None, user_id: str | None, client: str | None = None) -> Principal:
        """The principal of a bearer key. ``client`` (the caller's address) counts failures: past
        ``auth.max_failed_per_minute`` wrong keys in a minute, that address gets 429,
        even with a right key, until the minute has passed (guessing keys gets nowhere fast)."""
        user = self._user(user_id)
        if self.open:
            return Principal(LOCAL_KEY_ID, "operator", user, None, local=True)
        self._check_failures(client)
        if not token:
            raise AuthError("no API key given", fix="send `Authorization: Bearer <key>`")
        key = self._by_digest.get(hashlib.sha256(token.encode()).hexdigest())
        if key is None:
            self._fail(client)
            raise AuthError("invalid API key", fix="check the key, or ask an operator for one")
        return self.principal_for(key, user)

    def _check_failures(self, client: str | None) -> None:
        if client is None:
            return
        count, oldest_age = self._state.failures(client, FAILURE_WINDOW_S)
        if count >= self._max_failed:
            raise RateLimitedError(f"too many requests with a wrong API key from {client}",
                                   retry_after=max(1.0, FAILURE_WINDOW_S - oldest_age),
                                   fix="check the key, then retry after the time in Retry-After")

    def _fail(self, client: str | None) -> None:
        if client is not None:
            self._state.add_failure(client, FAILURE_WINDOW_S)

    def principal_for(self, key: ApiKey, user_id: str | None) -> Principal:
        """The principal of a key already identified (by its secret, or by a web session),
        rate-limited like any call with that key."""
        user = self._user(user_id)
        self._rate_limit(key)
        return Principal(key.id, key.role, user, tuple(key.indexes) if key.indexes is not None else None)

    def by_id(self, key_id: str) -> ApiKey | None:
        return next((k for k in self._by_digest.values() if k.id == key_id), None)

    @staticmethod
    def _user(user_id: str | None) -> str:
        if user_id is None or user_id == "":
            return "-"
        if not USER_ID.match(user_id):
            raise InvalidRequestError("X-User-Id must be 1-128 characters of letters, digits and _.@:+-",
                                      param="X-User-Id")
        return user_id

    def _rate_limit(self, key: ApiKey) -> None:
        limit = key.rate_limit_per_minute
        if not limit:
            return
        retry = self._state.take(f"key:{key.id}", float(limit), limit / 60.0)
        if retry > 0:
            raise RateLimitedError(f"rate limit of {limit} requests per minute reached for key {key.id!r}",
                                   retry_after=max(1.0, retry), fix="slow down, or ask for a higher limit")

"""Readiness, checked by the server itself: a one-token generation every
``server.readiness_interval_s``, in the background. ``GET /readyz`` (public) only reads the last
result, so no caller, however many, can make the server generate; a load balancer polling it
sees the engine's health as of the last check.

Ready means: the last check succeeded, and it is not older than three intervals (a check stuck
behind a full queue counts against readiness once it overruns ``readiness_timeout_s``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

from agentstack import background
from agentstack.engines.base import ChatRequest
from agentstack.engines.params import SamplingParams
from agentstack.errors import AgentstackError

log = logging.getLogger(__name__)


@dataclass
class Check:
    ok: bool
    at: float  # time.time() of the end of the check
    model_version: str | None = None
    latency_ms: float | None = None
    reason: str | None = None


class Readiness:
    def __init__(self, engine: Any, router: Any, interval_s: float, timeout_s: float):
        self.engine = engine
        self.router = router
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self.last: Check | None = None
        self.checks = 0
        self._task: asyncio.Task | None = None

    async def check(self) -> Check:
        started = time.perf_counter()
        try:
            version = self.router.active
            request = ChatRequest(messages=[{"role": "user", "content": "ping"}], model=version,
                                  params=SamplingParams(max_tokens=1, temperature=0.0))
            result = await asyncio.wait_for(self.engine.chat(request), timeout=self.timeout_s)
            check = Check(True, time.time(), result.model_version, round((time.perf_counter() - started) * 1000, 1))
        except (AgentstackError, asyncio.TimeoutError) as exc:
            check = Check(False, time.time(), reason=type(exc).__name__)
        except Exception as exc:  # noqa: BLE001  (any failure means "not ready"; the log has the details)
            log.exception("readiness check failed")
            check = Check(False, time.time(), reason=type(exc).__name__)
        if self.last is not None and self.last.ok != check.ok:
            log.warning("readiness changed: %s", "ready" if check.ok else f"not ready ({check.reason})")
        self.last = check
        self.checks += 1
        return check

    def status(self) -> tuple[bool, dict[str, Any]]:
        last = self.last
        if last is None:
            return False, {"status": "not ready", "reason": "starting"}
        age = time.time() - last.at
        if not last.ok:
            return False, {"status": "not ready", "reason": last.reason, "checked_s_ago": round(age, 1)}
        if age > 3 * self.interval_s + self.timeout_s:
            return False, {"status": "not ready", "reason": "stale", "checked_s_ago": round(age, 1)}
        return True, {"status": "ready", "model_version": last.model_version, "latency_ms": last.latency_ms,
                      "checked_s_ago": round(age, 1)}

    async def _loop(self) -> None:
        while True:
            await self.check()
            await asyncio.sleep(self.interval_s)

    def start(self) -> None:
        self._task = background.start(self._task, self._loop(), "readiness")

    async def aclose(self) -> None:
        await background.stop(self._task)
        self._task = None

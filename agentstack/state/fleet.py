"""The replica's loop that keeps it in step with the others: every ``state.heartbeat_s``, and at
once on a notice, it runs the deployer's ``sync`` (load what is asked, follow the active version,
beat), and it hands index notices to whoever registered for them (index caches).

Notices only make changes arrive sooner: the heartbeat tick reads the database anyway, so a lost
notice or a Redis restart delays a change by at most one tick. This module knows nothing about
HTTP or what the notices mean.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from agentstack.state.base import INDEX_CHANNEL, MODEL_CHANNEL

log = logging.getLogger(__name__)


class FleetLoop:
    def __init__(self, deployer: Any, shared: Any, heartbeat_s: float):
        self.deployer = deployer
        self.shared = shared
        self.heartbeat_s = heartbeat_s
        self.index_listeners: list[Callable[[dict[str, Any]], None]] = []
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task] = []

    def start(self) -> None:
        if not self._tasks:
            loop = asyncio.get_running_loop()
            self._tasks = [loop.create_task(self._ticks(), name="fleet-sync"),
                           loop.create_task(self._notices(), name="fleet-notices")]

    async def _ticks(self) -> None:
        while True:
            try:
                await self.deployer.sync()
            except asyncio.CancelledError:
                raise
            except Exception:  # the loop must outlive a database or Redis hiccup
                log.exception("replica sync failed")
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.heartbeat_s)
            self._wake.clear()

    async def _notices(self) -> None:
        while True:
            try:
                async for channel, message in self.shared.subscribe(MODEL_CHANNEL, INDEX_CHANNEL):
                    if channel == MODEL_CHANNEL:
                        self._wake.set()
                    else:
                        for listener in self.index_listeners:
                            try:
                                listener(message)
                            except Exception:  # noqa: BLE001  (one listener must not stop the others)
                                log.exception("index notice listener failed")
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001  (Redis away: the heartbeat tick still syncs)
                log.warning("change notices unavailable (%s); retrying", exc)
            await asyncio.sleep(self.heartbeat_s)

    async def aclose(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []

"""The feedback and alignment components one server holds, built lazily from its services:
the feedback store, the PII scrubber for exports, the model registry, the deployer, the job
manager and the fleet loop that keeps this replica in step with the others. ``start`` (in the
server's lifespan) restores the persisted active version, recovers jobs left by a previous process
(when this replica holds the monitor lease), and starts the job monitor and the fleet loop;
``aclose`` stops them and removes this replica's row (running workers carry on and are adopted by
whichever replica runs the monitor).

This module knows nothing about HTTP.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from agentstack.config import Settings

log = logging.getLogger(__name__)


class AlignmentServices:
    def __init__(self, settings: Settings, db: Any, engine: Any, router: Any, audit: Any, shared: Any = None):
        from agentstack.state.records import new_replica_id

        self.settings = settings
        self.db = db
        self.engine = engine
        self.router = router
        self.audit = audit
        self.shared = shared
        self.replica_id = new_replica_id()
        self._parts: dict[str, Any] = {}

    def _part(self, name: str, build: Any) -> Any:
        if name not in self._parts:
            self._parts[name] = build()
        return self._parts[name]

    @property
    def feedback(self) -> Any:
        from agentstack.feedback.store import FeedbackStore

        return self._part("feedback", lambda: FeedbackStore(self.db))

    @property
    def scrubber(self) -> Any:
        """The export scrubber (always on: exports never leave unscrubbed)."""
        from agentstack.feedback.scrub import TextScrubber

        return self._part("scrubber", lambda: TextScrubber(self.settings, enabled=True))

    @property
    def registry(self) -> Any:
        from agentstack.alignment.registry import ModelRegistry

        return self._part("registry", lambda: ModelRegistry(self.settings.registry_path))

    @property
    def deployer(self) -> Any:
        from agentstack.alignment.deploy import Deployer

        return self._part("deployer", lambda: Deployer(self.settings, self.engine, self.router, self.registry,
                                                       db=self.db, shared=self.shared, replica_id=self.replica_id))

    @property
    def jobs(self) -> Any:
        from agentstack.alignment.manager import JobManager

        return self._part("jobs", lambda: JobManager(self.settings, self.db, self.audit, self.deployer,
                                                     replica_id=self.replica_id))

    @property
    def fleet(self) -> Any:
        from agentstack.state.fleet import FleetLoop

        return self._part("fleet", lambda: FleetLoop(self.deployer, self.deployer.shared,
                                                     self.settings.state.heartbeat_s))

    async def start(self) -> None:
        await self.deployer.restore()
        await self.deployer.beat()
        if await asyncio.to_thread(self.jobs.lease.acquire):
            await asyncio.to_thread(self.jobs.check)  # jobs whose worker died with the previous server
        self.jobs.start()
        self.fleet.start()

    async def aclose(self) -> None:
        if "fleet" in self._parts:
            await self._parts["fleet"].aclose()
        if "jobs" in self._parts:
            await self._parts["jobs"].aclose()
        if "deployer" in self._parts:
            try:
                await asyncio.to_thread(self._parts["deployer"].replicas.remove)
            except Exception:  # noqa: BLE001  (its heartbeat lapses anyway)
                log.warning("could not remove this replica's row")

"""The feedback and alignment components one server holds, built lazily from its services:
the feedback store, the PII scrubber for exports, the model registry, the deployer and the job
manager. ``start`` (in the server's lifespan) restores the persisted active version, recovers jobs
left by a previous process and starts the job monitor; ``aclose`` stops the monitor (running
workers carry on and are picked up again by the next start).

This module knows nothing about HTTP.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from agentstack.config import Settings

log = logging.getLogger(__name__)


class AlignmentServices:
    def __init__(self, settings: Settings, db: Any, engine: Any, router: Any, audit: Any):
        self.settings = settings
        self.db = db
        self.engine = engine
        self.router = router
        self.audit = audit
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

        return self._part("deployer", lambda: Deployer(self.settings, self.engine, self.router, self.registry))

    @property
    def jobs(self) -> Any:
        from agentstack.alignment.manager import JobManager

        return self._part("jobs", lambda: JobManager(self.settings, self.db, self.audit, self.deployer))

    async def start(self) -> None:
        await self.deployer.restore()
        await asyncio.to_thread(self.jobs.check)  # jobs whose worker died with the previous server
        self.jobs.start()

    async def aclose(self) -> None:
        if "jobs" in self._parts:
            await self._parts["jobs"].aclose()

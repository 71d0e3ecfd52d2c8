"""The components one server process holds, built and warmed in the app's lifespan.

Routes receive them through ``server/deps.py``; nothing here is a module global, so tests can run
several apps in one process.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry

from agentstack.audit import AuditLog
from agentstack.config import Settings
from agentstack.db import open_db
from agentstack.engines import build_engine
from agentstack.engines.base import ChatEngine
from agentstack.engines.router import ModelRouter
from agentstack.history import ConversationStore, ResponseStore
from agentstack.metrics import EngineMetrics
from agentstack.state.records import ModelState
from agentstack.storage.database import Database
from server.auth import KeyStore

log = logging.getLogger(__name__)


@dataclass
class Services:
    settings: Settings
    engine: ChatEngine
    router: ModelRouter
    db: Database
    responses: ResponseStore
    conversations: ConversationStore
    audit: AuditLog
    keys: KeyStore
    metrics: EngineMetrics
    registry: CollectorRegistry
    shared: Any = None  # the SharedState (agentstack/state): memory, or Redis when replicas share state
    owns_engine: bool = True
    extras: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def create(cls, settings: Settings, registry: CollectorRegistry, engine: ChatEngine | None = None,
               shared: Any = None) -> "Services":
        metrics = EngineMetrics(registry)
        owns = engine is None
        if engine is None:
            engine = build_engine(settings, metrics=metrics)
        elif hasattr(engine, "attach_metrics"):
            engine.attach_metrics(metrics)
        if shared is None:
            from agentstack.state import build_state

            shared = build_state(settings)
        db = open_db(settings)  # migrated, or refused with the command to run (storage/migrate.py)
        alias = settings.engine.served_model_name
        router = ModelRouter(engine, alias, ModelState(db, alias), metrics=metrics)
        return cls(settings=settings, engine=engine, router=router, db=db, responses=ResponseStore(db),
                   conversations=ConversationStore(db), audit=AuditLog(db), keys=KeyStore(settings.auth, shared),
                   metrics=metrics, registry=registry, shared=shared, owns_engine=owns)

    async def start(self) -> None:
        await asyncio.to_thread(self.engine.warm_up)
        await self.alignment.start()  # restore the promoted version before the first request resolves it
        log.info("serving %s as %r", self.router.active, self.router.alias)

    @property
    def alignment(self) -> Any:
        """Feedback store, model registry, deployer and alignment jobs (agentstack/alignment/services.py)."""
        if "alignment" not in self.extras:
            from agentstack.alignment.services import AlignmentServices

            self.extras["alignment"] = AlignmentServices(self.settings, self.db, self.engine, self.router, self.audit,
                                                         self.shared)
        return self.extras["alignment"]

    @property
    def indexes(self) -> Any:
        """The IndexManager; embedding models load on first use."""
        if "indexes" not in self.extras:
            from agentstack.index.manager import IndexManager

            self.extras["indexes"] = IndexManager(self.settings, embedder=self.embedder)
        return self.extras["indexes"]

    @property
    def orchestrators(self) -> Any:
        if "orchestrators" not in self.extras:
            from agentstack.orchestrators.common import AgentDeps
            from agentstack.orchestrators.runner import Orchestrators

            def resolve(name: str | None) -> str:
                return self.router.resolve(name) if name else self.router.active

            self.extras["orchestrators"] = Orchestrators(AgentDeps.load(self.engine, self.settings, resolve,
                                                                        self.indexes))
        return self.extras["orchestrators"]

    def embedder(self) -> Any:
        """The sentence-transformers embedder, built on first use."""
        if "embedder" not in self.extras:
            from agentstack.embeddings import build_embedder

            embedder = build_embedder(self.settings)
            embedder.warm_up()
            self.extras["embedder"] = embedder
        return self.extras["embedder"]

    async def aclose(self) -> None:
        if "alignment" in self.extras:
            await self.extras["alignment"].aclose()
        if self.owns_engine:
            await self.engine.aclose()
        self.db.close()
        if self.shared is not None:
            self.shared.close()

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
        await asyncio.to_thread(self.pseudonym_key)  # warns now if replicas would disagree
        await self.alignment.start()  # restore the promoted version before the first request resolves it
        self.readiness.start()
        log.info("serving %s as %r", self.router.active, self.router.alias)

    @property
    def readiness(self) -> Any:
        """The background readiness check that ``/readyz`` reads (server/readiness.py)."""
        if "readiness" not in self.extras:
            from server.readiness import Readiness

            s = self.settings.server
            self.extras["readiness"] = Readiness(self.engine, self.router, s.readiness_interval_s,
                                                 s.readiness_timeout_s)
        return self.extras["readiness"]

    def pseudonym_key(self) -> bytes:
        """The key naming end users in the audit log (agentstack/feedback/privacy.py)."""
        if "pseudonym_key" not in self.extras:
            from agentstack.feedback.privacy import pseudonym_key

            self.extras["pseudonym_key"] = pseudonym_key(self.settings)
        return self.extras["pseudonym_key"]

    def resolve_model(self, name: str | None, principal: Any) -> str:
        """The model version ``name`` stands for, if ``principal`` may use it: operators any loaded
        version; app keys the served alias, the active version, and versions an operator has
        marked selectable (``POST /v1/admin/models/{version}/selectable``)."""
        from agentstack.errors import ForbiddenError

        version = self.router.resolve(name) if name else self.router.active
        if principal.has("operator") or name in (None, self.router.alias) or version == self.router.active:
            return version
        if version in self.alignment.deployer.selectable():
            return version
        raise ForbiddenError(f"model version {version!r} is not selectable with an app key; ask for "
                             f"{self.router.alias!r} (the active version)",
                             fix=f"or have an operator mark it selectable: POST /v1/admin/models/{version}/selectable")

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
        if "readiness" in self.extras:
            await self.extras["readiness"].aclose()
        if "alignment" in self.extras:
            await self.extras["alignment"].aclose()
        if self.owns_engine:
            await self.engine.aclose()
        self.db.close()
        if self.shared is not None:
            self.shared.close()

"""Public model names → concrete model versions.

Clients ask for the served alias (``agentstack`` by default), which resolves to the *active*
version, or for a concrete version by name. Promotion and rollback call :meth:`activate`, one
atomic pointer swap: requests already admitted keep the version they resolved. The active name is
persisted in the database (``state/records.py``: ``ModelState``), so a restart, and every other
replica, serves the same version; :meth:`follow` is how a replica applies a change another made.

This module knows nothing about how versions are trained or stored (see ``alignment/registry.py``).
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from agentstack.engines.base import ChatEngine
from agentstack.errors import ModelNotFoundError

log = logging.getLogger(__name__)


class ModelRouter:
    def __init__(self, engine: ChatEngine, alias: str, state: Any = None, metrics: Any = None):
        self.engine = engine
        self.alias = alias
        self.state = state  # a ModelState (get / set_active), or None: not persisted
        self.metrics = metrics
        self._lock = threading.Lock()
        self._active: str | None = None

    def versions(self) -> list[str]:
        return [m.id for m in self.engine.models()]

    @property
    def base(self) -> str:
        models = self.engine.models()
        return next(m.id for m in models if m.parent is None)

    @property
    def active(self) -> str:
        with self._lock:
            if self._active is None:
                wanted = self.state.get().active if self.state is not None else None
                self._active = wanted if wanted in self.versions() else self.base
                if wanted and wanted != self._active:
                    log.warning("persisted active version %s is not loaded; serving %s", wanted, self._active)
                self._report(self._active)
            return self._active

    def resolve(self, name: str) -> str:
        if name == self.alias:
            return self.active
        if name in self.versions():
            return name
        raise ModelNotFoundError(f"model {name!r} does not exist; available: {', '.join(self.available())}",
                                 param="model", fix="use one of the listed model names")

    def available(self) -> list[str]:
        return [self.alias, *self.versions()]

    def activate(self, version: str, *, persist: bool = True) -> str:
        """Point the alias at ``version`` (persisted unless ``persist=False``); returns the previous
        active version."""
        if version not in self.versions():
            raise ModelNotFoundError(f"version {version!r} is not loaded in the engine; loaded: "
                                     f"{', '.join(self.versions())}", param="version")
        previous = self.active
        with self._lock:
            if persist and self.state is not None:
                self.state.set_active(version, previous)
            self._active = version
            self._report(version)
        log.info("active model version: %s (was %s)", version, previous)
        return previous

    def follow(self, version: str) -> bool:
        """Serve ``version``, already made active by a replica (nothing persisted). Returns whether
        it changed; False when ``version`` is not loaded here."""
        if version not in self.versions():
            return False
        with self._lock:
            if self._active == version:
                return False
            self._active = version
            self._report(version)
        log.info("active model version: %s (changed by another replica)", version)
        return True

    def _report(self, version: str) -> None:
        if self.metrics is not None:
            self.metrics.set_active_version(version)

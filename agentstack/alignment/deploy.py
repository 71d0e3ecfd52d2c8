"""Promotion and rollback of registry versions in the running server, without a restart.

``promote(version)``:

1. the version's files are checked against its manifest; a version the gate did not pass is
   refused (409) unless ``force`` (audited as such);
2. its adapter is loaded into the engine under the version's name (embedded: merged into a copy
   of the base weights on the compute worker; vLLM: ``POST /v1/load_lora_adapter``). Serving
   continues on the active version meanwhile;
3. :meth:`ModelRouter.activate` swaps the served alias in one step and persists it
   (``registry/active.json``, atomic write). Requests already admitted finish on the version they
   resolved; new ones get the new version;
4. the deployment is appended to ``registry/deployments.jsonl``; adapters beyond
   ``alignment.max_loaded_versions`` (never the active or previous one) are unloaded.

A promotion killed before step 3 leaves ``active.json`` untouched, so the previous version keeps
serving, and after a restart :meth:`restore` loads whatever ``active.json`` names. ``rollback``
is the same swap to an earlier version (default: the one before the current), allowed for any
version that has served before, or the base model; it skips the gate.

App keys may ask by name only for the active version and the versions an operator has marked
selectable (``set_selectable``; ``registry/selectable.json``), so a rolled-back version stops
serving them with the rollback. Operators may ask for any loaded version.

This module knows nothing about HTTP or training.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from agentstack.alignment import faults
from agentstack.alignment.registry import ModelRegistry
from agentstack.config import Settings
from agentstack.errors import ConflictError, ModelNotFoundError, NotFoundError
from agentstack.storage.files import atomic_write_json, read_json

log = logging.getLogger(__name__)


class Deployer:
    def __init__(self, settings: Settings, engine: Any, router: Any, registry: ModelRegistry | None = None):
        self.settings = settings
        self.engine = engine
        self.router = router
        self.registry = registry or ModelRegistry(settings.registry_path)
        self._lock = asyncio.Lock()
        self._loaded_at: dict[str, float] = {}

    @property
    def base(self) -> str:
        return self.router.base

    # -- start-up ----------------------------------------------------------------------------------
    async def restore(self) -> str | None:
        """Load the adapter of the persisted active version if the engine lacks it (after a restart).
        Returns the version loaded, or None. A version that fails to load is logged, and the router
        falls back to the base model."""
        state = read_json(self.router.state_path, {}) if self.router.state_path else {}
        wanted = (state or {}).get("active")
        if not wanted or wanted in self.router.versions() or not self.registry.exists(wanted):
            return None
        try:
            version = await asyncio.to_thread(self.registry.verify, wanted)
            await self.engine.load_adapter(wanted, version.adapter_dir)
        except Exception as exc:  # noqa: BLE001  (serve the base model rather than nothing)
            log.error("could not restore active version %s (%s); serving the base model", wanted, exc)
            return None
        self._loaded_at[wanted] = time.time()
        log.info("restored active version %s", wanted)
        return wanted

    # -- promote / rollback ----------------------------------------------------------------------------
    async def promote(self, version: str, *, key_id: str, force: bool = False, job_id: str | None = None,
                      reason: str = "manual") -> dict[str, Any]:
        async with self._lock:
            if version != self.base:
                v = await asyncio.to_thread(self.registry.verify, version)
                gate = v.gate
                if not force and not (gate and gate.get("passed")):
                    why = "was never gated" if gate is None else f"was rejected by the gate ({gate.get('summary')})"
                    raise ConflictError(f"version {version} {why}",
                                        fix="retrain, or promote with force=true (recorded in the audit log)")
            return await self._swap(version, action="promote", key_id=key_id, job_id=job_id, forced=force,
                                    reason=reason)

    async def rollback(self, version: str | None = None, *, key_id: str) -> dict[str, Any]:
        async with self._lock:
            served = self.served_before()
            if version is None:
                state = read_json(self.router.state_path, {}) if self.router.state_path else {}
                version = (state or {}).get("previous")
                if not version or version == self.router.active:
                    raise ConflictError("there is no earlier version to roll back to",
                                        fix="name a version: POST /v1/admin/models/rollback {\"version\": ...}")
            if version != self.base:
                if not self.registry.exists(version):
                    raise NotFoundError(f"model version {version!r} is not in the registry", param="version")
                if version not in served:
                    raise ConflictError(f"version {version} has never served; roll back only to versions that "
                                        "have", fix="promote it instead (the gate applies)")
                await asyncio.to_thread(self.registry.verify, version)
            return await self._swap(version, action="rollback", key_id=key_id)

    async def _swap(self, version: str, *, action: str, key_id: str, **detail: Any) -> dict[str, Any]:
        previous = self.router.active
        if version == previous:
            return {"active": version, "previous": previous, "changed": False}
        loaded_now = False
        if version not in self.router.versions():
            adapter = self.registry.get(version).adapter_dir
            await self.engine.load_adapter(version, adapter)
            loaded_now = True
        self._loaded_at[version] = time.time()
        faults.point("promote.loaded")
        try:
            previous = await asyncio.to_thread(self.router.activate, version)
        except ModelNotFoundError:
            if loaded_now:
                await self.engine.unload_adapter(version)
            raise
        faults.point("promote.activated")
        entry = {"action": action, "version": version, "previous": previous, "key_id": key_id,
                 **{k: v for k, v in detail.items() if v is not None}}
        await asyncio.to_thread(self.registry.record_deployment, entry)
        evicted = await self._evict(keep={version, previous, self.base})
        log.info("%s: serving %s (was %s)", action, version, previous)
        return {"active": version, "previous": previous, "changed": True, "evicted": evicted}

    async def _evict(self, keep: set[str]) -> list[str]:
        limit = self.settings.alignment.max_loaded_versions
        loaded = [v for v in self.router.versions() if v != self.base and self.registry.exists(v)]
        excess = len(loaded) + 1 - limit
        victims = sorted((v for v in loaded if v not in keep), key=lambda v: self._loaded_at.get(v, 0.0))
        evicted = []
        for name in victims[:max(0, excess)]:
            try:
                await self.engine.unload_adapter(name)
                evicted.append(name)
            except Exception as exc:  # noqa: BLE001  (an adapter that will not unload must not fail a promotion)
                log.warning("could not unload %s: %s", name, exc)
        return evicted

    # -- which versions app keys may select ---------------------------------------------------------
    def selectable(self) -> set[str]:
        """Versions an operator has marked selectable by name for app keys (besides the active one)."""
        return set(read_json(self._selectable_path, {}).get("versions", []))

    def set_selectable(self, version: str, selectable: bool) -> dict[str, Any]:
        """Mark ``version`` (a registry version, the base model or a loaded adapter) selectable by
        app keys, or not. Persisted in ``registry/selectable.json``; the caller audits it."""
        known = version == self.base or version in self.router.versions() or self.registry.exists(version)
        if selectable and not known:
            raise NotFoundError(f"model version {version!r} is neither loaded nor in the registry", param="version",
                                fix="list versions with GET /v1/admin/models")
        current = self.selectable()
        changed = (version in current) != selectable
        updated = (current | {version}) if selectable else (current - {version})
        if changed:
            atomic_write_json(self._selectable_path, {"versions": sorted(updated)})
        return {"version": version, "selectable": selectable, "changed": changed, "selectable_versions": sorted(updated)}

    @property
    def _selectable_path(self) -> Any:
        return self.registry.root / "selectable.json"

    # -- reading -------------------------------------------------------------------------------------
    def served_before(self) -> set[str]:
        out = {d.get("version") for d in self.registry.deployments()} | {d.get("previous") for d in
                                                                       self.registry.deployments()}
        return {v for v in out if v}

    def models(self) -> dict[str, Any]:
        active = self.router.active
        loaded = set(self.router.versions())
        served = self.served_before()
        selectable = self.selectable()
        items = [{"version": self.base, "method": None, "base_model": self.base, "gate": None, "is_base": True}]
        items += [v.summary() for v in self.registry.list()]
        for item in items:
            name = item["version"]
            item.update({"active": name == active, "loaded": name in loaded,
                         "served_before": name in served or name == self.base, "is_base": name == self.base,
                         "selectable": name == active or name in selectable})
        return {"alias": self.router.alias, "active": active, "base": self.base, "loaded": sorted(loaded),
                "selectable": sorted(selectable), "data": items, "deployments": self.registry.deployments()[-50:]}

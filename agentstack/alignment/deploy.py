"""Promotion and rollback of registry versions across every API replica, without a restart.

``promote(version)``:

1. the version's files are checked against its manifest; a version the gate did not pass is
   refused (409) unless ``force`` (audited as such);
2. the ``promotion`` lease is taken in the database (one promotion at a time across replicas; a
   dead holder's lease lapses);
3. its adapter is loaded here (embedded: merged into a copy of the base weights on the compute
   worker; vLLM: ``POST /v1/load_lora_adapter``), then every other live replica is asked to preload
   it (``model_state.preload`` plus a notice) and the promotion waits until each has reported it
   loaded in its heartbeat row. A replica that does not within ``state.promote_timeout_s`` fails
   the promotion and nothing changes. Serving continues on the active version meanwhile;
4. one transaction sets ``model_state.active`` and appends the deployment, then this replica swaps
   its router and a notice tells the others, which swap on receipt (or at their next heartbeat if
   the notice was lost): from the return of ``promote`` every replica serves the new version within
   ``state.heartbeat_s`` plus a query, well under 2 s. Requests already admitted finish on the
   version they resolved;
5. adapters beyond ``alignment.max_loaded_versions`` (never the active or previous one) are unloaded.

A promotion killed before step 4 leaves ``model_state`` untouched, so the previous version keeps
serving everywhere, and after a restart :meth:`restore` loads whatever ``model_state`` names.
``rollback`` is the same swap to an earlier version (default: the one before the current), allowed
for any version that has served before, or the base model; it skips the gate.

:meth:`sync` is the follower's side, run by every replica at each heartbeat and on each notice:
load what ``model_state`` asks to preload or serve, follow the active version, report in the
``replicas`` row. With one replica (the embedded default) all of this happens in one process.

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
from agentstack.errors import ConflictError, NotFoundError
from agentstack.state.base import MODEL_CHANNEL
from agentstack.state.records import Deployments, Lease, Replicas, new_replica_id
from agentstack.storage.files import atomic_write_json, read_json

log = logging.getLogger(__name__)


class Deployer:
    def __init__(self, settings: Settings, engine: Any, router: Any, registry: ModelRegistry | None = None, *,
                 db: Any, shared: Any = None, replica_id: str | None = None):
        from agentstack.state.memory import MemoryState

        self.settings = settings
        self.engine = engine
        self.router = router
        self.registry = registry or ModelRegistry(settings.registry_path)
        self.db = db
        self.state = router.state  # ModelState: the served version in the database
        self.deployments = Deployments(db)
        self.shared = shared if shared is not None else MemoryState()
        self.replica_id = replica_id or new_replica_id()
        self.replicas = Replicas(db, self.replica_id, settings.state.replica_timeout_s)
        self._lock = asyncio.Lock()  # one promotion or sync at a time in this process
        self._loaded_at: dict[str, float] = {}

    @property
    def base(self) -> str:
        return self.router.base

    # -- loading -------------------------------------------------------------------------------------
    async def _load(self, version: str) -> bool:
        """Load ``version``'s adapter here if it is not loaded (checked against its manifest first).
        Returns whether it was loaded now."""
        if version == self.base or version in self.router.versions():
            return False
        checked = await asyncio.to_thread(self.registry.verify, version)
        await self.engine.load_adapter(version, checked.adapter_dir)
        self._loaded_at[version] = time.time()
        return True

    async def beat(self) -> None:
        """Report this replica alive, with what it serves and has loaded."""
        await asyncio.to_thread(self.replicas.beat, active=self.router.active, loaded=self.router.versions())

    # -- start-up ----------------------------------------------------------------------------------
    async def restore(self) -> str | None:
        """Load the adapter of the persisted active version if the engine lacks it (after a restart).
        Returns the version loaded, or None. A version that fails to load is logged, and the router
        falls back to the base model."""
        wanted = (await asyncio.to_thread(self.state.get)).active
        if not wanted or wanted in self.router.versions() or not self.registry.exists(wanted):
            return None
        try:
            await self._load(wanted)
        except Exception as exc:  # noqa: BLE001  (serve the base model rather than nothing)
            log.error("could not restore active version %s (%s); serving the base model", wanted, exc)
            return None
        self.router.follow(wanted)
        log.info("restored active version %s", wanted)
        return wanted

    # -- promote / rollback ----------------------------------------------------------------------------
    async def promote(self, version: str, *, key_id: str, force: bool = False, job_id: str | None = None,
                      reason: str = "manual") -> dict[str, Any]:
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
        served = await asyncio.to_thread(self.served_before)
        if version is None:
            state = await asyncio.to_thread(self.state.get)
            version = state.previous
            if not version or version == (state.active or self.base):
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
        lease = Lease(self.db, "promotion", self.replica_id, self.settings.state.promote_timeout_s + 30)
        async with self._lock:
            if not await asyncio.to_thread(self._take, lease):
                holder = await asyncio.to_thread(lease.holder_now)
                raise ConflictError(f"another promotion or rollback is in progress (replica {holder})",
                                    fix="retry when it has finished")
            try:
                return await self._swap_locked(version, action=action, key_id=key_id, **detail)
            finally:
                await asyncio.to_thread(lease.release)

    def _take(self, lease: Lease) -> bool:
        """The lease if free, or if its holder is a replica whose heartbeat has stopped (it died
        mid-promotion: nothing it did was committed, see the module docstring). A holder that still
        looks alive may have just died (a restart right after ``kill -9`` comes back within
        ``state.replica_timeout_s``), so this waits that long for its heartbeat to stop before it
        gives up: only a holder that keeps beating is really promoting."""
        deadline = time.monotonic() + self.settings.state.replica_timeout_s + 2 * self.settings.state.heartbeat_s
        while True:
            if lease.acquire():
                return True
            holder = lease.holder_now()
            live = {r["id"] for r in self.replicas.live()}
            if holder is not None and holder not in live and lease.take_over(holder):
                return True
            if time.monotonic() > deadline:
                return False
            time.sleep(min(0.2, self.settings.state.heartbeat_s))

    async def _swap_locked(self, version: str, *, action: str, key_id: str, **detail: Any) -> dict[str, Any]:
        previous = (await asyncio.to_thread(self.state.get)).active or self.base
        if version == previous:
            await self._load(version)
            self.router.follow(version)
            return {"active": version, "previous": previous, "changed": False}
        loaded_now = await self._load(version)
        try:
            await self._preload_everywhere(version)
        except BaseException:
            await asyncio.to_thread(self.state.set_preload, None)
            if loaded_now:
                await self.engine.unload_adapter(version)
            raise
        faults.point("promote.loaded")
        entry = {"action": action, "version": version, "previous": previous, "key_id": key_id,
                 **{k: v for k, v in detail.items() if v is not None}}

        def commit() -> None:
            with self.db.tx() as conn:
                self.state.set_active(version, previous, conn)
                self.deployments.record(entry, conn)

        await asyncio.to_thread(commit)
        self.router.follow(version)
        await asyncio.to_thread(self.shared.publish, MODEL_CHANNEL, {"kind": "active", "version": version})
        await self.beat()
        faults.point("promote.activated")
        evicted = await self._evict(keep={version, previous, self.base})
        log.info("%s: serving %s (was %s)", action, version, previous)
        return {"active": version, "previous": previous, "changed": True, "evicted": evicted}

    async def _preload_everywhere(self, version: str) -> None:
        """Return once every live replica has ``version`` loaded; ConflictError after the timeout."""
        await self.beat()
        others = [r for r in await asyncio.to_thread(self.replicas.live) if r["id"] != self.replica_id]
        if not others or version == self.base:
            return
        await asyncio.to_thread(self.state.set_preload, version)
        await asyncio.to_thread(self.shared.publish, MODEL_CHANNEL, {"kind": "preload", "version": version})
        deadline = time.monotonic() + self.settings.state.promote_timeout_s
        while True:
            live = await asyncio.to_thread(self.replicas.live)
            missing = sorted(r["id"] for r in live if r["id"] != self.replica_id and version not in r["loaded"])
            if not missing:
                return
            if time.monotonic() > deadline:
                raise ConflictError(f"replicas {missing} did not load {version} within "
                                    f"{self.settings.state.promote_timeout_s:.0f} s; nothing changed",
                                    fix="check those replicas' logs and that they read the registry volume, "
                                        "then promote again")
            await asyncio.sleep(0.05)

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
        with self.registry._lock():  # read-modify-write, across replicas sharing the registry
            current = self.selectable()
            changed = (version in current) != selectable
            updated = (current | {version}) if selectable else (current - {version})
            if changed:
                atomic_write_json(self._selectable_path, {"versions": sorted(updated)})
        return {"version": version, "selectable": selectable, "changed": changed, "selectable_versions": sorted(updated)}

    @property
    def _selectable_path(self) -> Any:
        return self.registry.root / "selectable.json"

    # -- following other replicas ---------------------------------------------------------------------
    async def sync(self) -> None:
        """Load what the database asks this replica to preload or serve, follow the active version,
        and beat. Skipped while this replica's own promotion runs (it does the same itself)."""
        if not self._lock.locked():
            async with self._lock:
                state = await asyncio.to_thread(self.state.get)
                for version in (state.preload, state.active):
                    if version and self.registry.exists(version):
                        try:
                            await self._load(version)
                        except Exception as exc:  # noqa: BLE001  (the promoter times out and reports it)
                            log.error("could not load %s asked for by another replica: %s", version, exc)
                target = state.active or self.base
                if target != self.router.active and self.router.follow(target):
                    await self._evict(keep={target, state.previous or self.base, self.base})
        await self.beat()

    # -- reading -------------------------------------------------------------------------------------
    def served_before(self) -> set[str]:
        history = self.deployments.list()
        out = {d.get("version") for d in history} | {d.get("previous") for d in history}
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
                "selectable": sorted(selectable), "data": items, "deployments": self.deployments.list(limit=50),
                "replicas": [{k: r[k] for k in ("id", "host", "active", "loaded", "heartbeat_at")}
                             for r in self.replicas.live()]}

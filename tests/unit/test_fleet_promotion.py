"""Promotion across replicas (agentstack/alignment/deploy.py) on one SQLite database: the promoter
waits until every live replica has the adapter loaded, a stale replica is not waited for, a replica
that never loads it fails the promotion with nothing changed, and a follower swaps on sync. Engines
are stand-ins that record loads (the real engines' loading is tested in tests/integration)."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from agentstack.engines.base import ModelInfo
from agentstack.errors import ConflictError
from tests.unit.test_alignment_registry import fake_adapter

pytestmark = pytest.mark.unit


class Engine:
    base_name = "base"

    def __init__(self):
        self.loaded: list[str] = []

    def models(self):
        return [ModelInfo(id="base", parent=None)] + [ModelInfo(id=v, parent="base") for v in self.loaded]

    async def load_adapter(self, name, path):
        assert (path / "adapter_model.safetensors").is_file()
        self.loaded.append(name)

    async def unload_adapter(self, name):
        self.loaded.remove(name)


@pytest.fixture
def world(tmp_path):
    from agentstack.alignment.registry import ModelRegistry
    from agentstack.config import load_settings
    from agentstack.db import open_db

    settings = load_settings(data_dir=tmp_path / "data", state={"promote_timeout_s": 0.6, "replica_timeout_s": 2})
    db = open_db(settings)
    registry = ModelRegistry(settings.registry_path)
    version = registry.register(fake_adapter(tmp_path / "adapter"), {"method": "dpo"}).name
    registry.write_gate(version, {"passed": True, "summary": "PASS"})
    yield settings, db, version
    db.close()


def replica(settings, db, name):
    from agentstack.alignment.deploy import Deployer
    from agentstack.engines.router import ModelRouter
    from agentstack.state.records import ModelState

    engine = Engine()
    router = ModelRouter(engine, "agentstack", ModelState(db, "agentstack"))
    return Deployer(settings, engine, router, db=db, replica_id=name)


def test_one_replica_promotes_and_persists(world):
    settings, db, version = world
    a = replica(settings, db, "a")
    result = asyncio.run(a.promote(version, key_id="op1"))
    assert result["changed"] and a.router.active == version
    assert a.state.get().active == version and a.deployments.list()[-1]["version"] == version
    fresh = replica(settings, db, "a2")  # a restart: restore loads and serves the persisted version
    assert asyncio.run(fresh.restore()) == version and fresh.router.active == version


def test_the_promoter_waits_for_every_live_replica_and_the_follower_swaps(world):
    settings, db, version = world
    a, b = replica(settings, db, "a"), replica(settings, db, "b")

    async def scenario():
        await b.beat()
        promotion = asyncio.create_task(a.promote(version, key_id="op1"))
        await asyncio.sleep(0.2)
        assert not promotion.done() and b.router.active == "base"  # waiting for b to load it
        assert a.state.get().preload == version
        await b.sync()  # b loads the preload and reports it
        result = await promotion
        await b.sync()  # the notice or the next heartbeat: b follows
        return result

    assert asyncio.run(scenario())["changed"]
    assert b.engine.loaded == [version] and b.router.active == version and a.state.get().preload is None


def test_a_dead_replica_is_not_waited_for_and_a_silent_live_one_fails_the_promotion(world):
    from agentstack.state.records import Replicas

    settings, db, version = world
    a = replica(settings, db, "a")
    stale = Replicas(db, "gone", 2.0)
    stale.beat(active="base", loaded=["base"])
    db.execute("UPDATE replicas SET heartbeat_at = :t WHERE id = 'gone'", {"t": time.time() - 60})
    assert asyncio.run(a.promote(version, key_id="op1"))["changed"]  # the dead one is ignored

    back = asyncio.run(a.rollback("base", key_id="op1"))
    assert back["active"] == "base"
    Replicas(db, "mute", 2.0).beat(active="base", loaded=["base"])  # alive, but never loads anything
    with pytest.raises(ConflictError, match=r"replicas \['mute'\] did not load"):
        asyncio.run(a.promote(version, key_id="op1"))
    served = a.state.get()
    assert served.active == "base" and served.preload is None and a.router.active == "base"


def test_two_promotions_at_once_are_one_after_the_other(world):
    from agentstack.state.records import Lease

    settings, db, version = world
    a = replica(settings, db, "a")
    b = replica(settings, db, "b")
    asyncio.run(b.beat())
    Lease(db, "promotion", "b", 30).acquire()  # replica b (alive: it keeps beating) is promoting
    beating = threading.Event()
    beating.set()

    def heart():
        while beating.is_set():
            asyncio.run(b.beat())
            time.sleep(0.1)

    thread = threading.Thread(target=heart)
    thread.start()
    try:
        t0 = time.monotonic()
        with pytest.raises(ConflictError, match="another promotion or rollback is in progress"):
            asyncio.run(a.promote(version, key_id="op1"))
        assert time.monotonic() - t0 >= settings.state.replica_timeout_s  # it waited to see b still beating
    finally:
        beating.clear()
        thread.join()
    assert a.state.get().active is None
    # b dies mid-promotion (kill -9): once its heartbeat is stale its lease is taken over, long before it lapses
    db.execute("UPDATE replicas SET heartbeat_at = :t WHERE id = 'b'", {"t": time.time() - 60})
    assert asyncio.run(a.promote(version, key_id="op1"))["changed"]


def test_a_promotion_right_after_the_holder_died_waits_for_its_heartbeat_to_stop(world):
    """A replica restarted right after ``kill -9`` mid-promotion finds the lease held by its dead
    predecessor, whose last heartbeat is still fresh: the promotion waits for it to go stale."""
    from agentstack.state.records import Lease

    settings, db, version = world
    dead = replica(settings, db, "dead")
    asyncio.run(dead.beat())  # it was alive a moment ago ...
    Lease(db, "promotion", "dead", 30).acquire()  # ... and died holding the lease
    a = replica(settings, db, "a")
    t0 = time.monotonic()
    assert asyncio.run(a.promote(version, key_id="op1"))["changed"]
    assert time.monotonic() - t0 >= settings.state.replica_timeout_s - 0.5
    assert a.state.get().active == version

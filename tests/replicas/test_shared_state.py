"""SharedState contract on both implementations (this process's memory and a real Redis): token
buckets, wrong-key counters, session revocation, notices; and the database records replicas keep
in step with (leases taken over when their holder stops renewing, replica heartbeats) on SQLite and
PostgreSQL."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

STATES = [pytest.param("memory", marks=pytest.mark.unit), pytest.param("redis", marks=pytest.mark.replicas)]
DATABASES = [pytest.param("sqlite", marks=pytest.mark.unit), pytest.param("postgres", marks=pytest.mark.replicas)]


@pytest.fixture(params=STATES)
def state(request):
    if request.param == "redis":
        from agentstack.state.redis_state import RedisState

        s = RedisState(request.getfixturevalue("redis_db"))
    else:
        from agentstack.state.memory import MemoryState

        s = MemoryState()
    yield s
    s.close()


def test_token_bucket_is_atomic_under_threads(state):
    taken, refused = [], []

    def hit():
        (taken if state.take("key:k", 10.0, 10.0 / 60) == 0.0 else refused).append(1)

    from tests.replicas.test_store_contract import concurrently

    concurrently(hit, 25)
    assert len(taken) == 10 and len(refused) == 15
    wait = state.take("key:k", 10.0, 10.0 / 60)
    assert 0 < wait <= 6.1  # one token refills in 6 s
    assert state.take("key:other", 10.0, 10.0 / 60) == 0.0


def test_failures_count_per_client_and_age_out(state):
    for _ in range(3):
        state.add_failure("10.0.0.1", 60.0)
    n, age = state.failures("10.0.0.1", 60.0)
    assert n == 3 and 0 <= age < 5
    assert state.failures("10.0.0.2", 60.0) == (0, 0.0)
    state.add_failure("10.0.0.3", 0.3)
    time.sleep(0.5)
    assert state.failures("10.0.0.3", 0.3)[0] == 0


def test_revocation_lasts_until_the_session_expires(state):
    state.revoke("sid-1", time.time() + 60)
    assert state.revoked("sid-1") and not state.revoked("sid-2")


def test_notices_reach_subscribers(state):
    async def scenario():
        got = []

        async def listen():
            async for channel, message in state.subscribe("agentstack:model"):
                got.append((channel, message))
                return

        task = asyncio.create_task(listen())
        for _ in range(100):  # until the subscription is in place
            await asyncio.sleep(0.02)
            await asyncio.to_thread(state.publish, "agentstack:model", {"kind": "active", "version": "v2"})
            if got:
                break
        await asyncio.wait_for(task, 5)
        return got

    assert asyncio.run(scenario())[0] == ("agentstack:model", {"kind": "active", "version": "v2"})


@pytest.mark.replicas
def test_redis_down_refuses_rather_than_lets_through(redis_url):
    from agentstack.errors import ConfigError
    from agentstack.state.redis_state import RedisState, StateUnavailableError
    from tests.services import free_port

    gone = RedisState(f"redis://127.0.0.1:{free_port()}/0")
    with pytest.raises(StateUnavailableError) as info:
        gone.take("key:k", 5.0, 1.0)
    assert isinstance(info.value, ConfigError) and "state.redis_url" in info.value.fix


@pytest.fixture(params=DATABASES)
def db(request, tmp_path):
    from agentstack.config import load_settings
    from agentstack.db import open_db

    if request.param == "postgres":
        settings = load_settings(data_dir=tmp_path / "d", database={"url": request.getfixturevalue("pg_database"),
                                                                    "migrate_on_start": True})
    else:
        settings = load_settings(data_dir=tmp_path / "d")
    database = open_db(settings)
    yield database
    database.close()


def test_a_lease_has_one_holder_and_is_taken_over_when_it_lapses(db):
    from agentstack.state.records import Lease

    a, b = Lease(db, "monitor", "replica-a", 0.5), Lease(db, "monitor", "replica-b", 0.5)
    results = []
    threads = [threading.Thread(target=lambda lease=lease: results.append(lease.acquire())) for lease in (a, b) * 3]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    holder = a.holder_now()
    assert holder in ("replica-a", "replica-b") and results.count(True) >= 1
    first, second = (a, b) if holder == "replica-a" else (b, a)
    assert first.acquire() and not second.acquire()  # renewing is the holder's alone
    time.sleep(0.7)  # the holder stops renewing (it died)
    assert second.acquire() and second.holder_now() == second.holder
    assert not first.acquire()
    second.release()
    assert first.acquire()


def test_replicas_are_live_while_they_beat(db):
    from agentstack.state.records import ModelState, Replicas

    a, b = Replicas(db, "a", 0.5), Replicas(db, "b", 0.5)
    a.beat(active="base", loaded=["base", "v1"])
    b.beat(active="base", loaded=["base"])
    assert [(r["id"], r["loaded"]) for r in a.live()] == [("a", ["base", "v1"]), ("b", ["base"])]
    time.sleep(0.7)
    a.beat(active="v1", loaded=["base", "v1"])
    assert [r["id"] for r in a.live()] == ["a"]
    a.remove()
    assert a.live() == []
    state = ModelState(db, "agentstack")
    assert state.get().active is None
    state.set_preload("v2")
    state.set_active("v2", "base")
    served = state.get()
    assert (served.active, served.previous, served.preload, served.generation) == ("v2", "base", None, 2)

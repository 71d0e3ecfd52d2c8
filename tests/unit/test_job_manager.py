"""The server side of jobs without training: refusing, dead and killed workers, cancel, and the
promotion of passed candidates (stand-in worker processes and a recording deployer)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time

import pytest

from agentstack.errors import ConflictError

pytestmark = pytest.mark.unit


@pytest.fixture
def manager(settings):
    from agentstack.alignment.manager import JobManager
    from agentstack.audit import AuditLog
    from agentstack.db import open_db

    db = open_db(settings)
    m = JobManager(settings, db, AuditLog(db))
    yield m
    db.close()


def stand_in(job_id: str, code: str) -> subprocess.Popen:
    """A process whose command line looks like the job's worker."""
    return subprocess.Popen([sys.executable, "-c", code, "agentstack.alignment.worker", job_id],
                            start_new_session=True)


def wait_until(predicate, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_too_little_data_is_refused_before_any_worker_starts(manager):
    from agentstack.alignment.preferences import InsufficientDataError
    from agentstack.alignment.spec import JobSpec

    with pytest.raises(InsufficientDataError, match="needs at least 50 training pairs"):
        manager.submit(JobSpec(), key_id="op1")
    assert manager.jobs.list() == []


def test_killed_worker_marks_the_job_failed_and_one_job_at_a_time(manager):
    from agentstack.alignment.spec import JobSpec

    job = manager.jobs.create(method="dpo", spec=JobSpec().model_dump(mode="json"), created_by="op1")
    proc = stand_in(job.id, "import os, signal, time; time.sleep(0.3); os.kill(os.getpid(), signal.SIGKILL)")
    manager._procs[job.id] = proc
    manager.jobs.update(job.id, pid=proc.pid, status="running", stage="training")
    with pytest.raises(ConflictError, match="one job runs at a time"):
        manager.submit(JobSpec(), key_id="op1")
    assert wait_until(lambda: proc.poll() is not None)
    assert manager.check() == [job.id]
    failed = manager.jobs.get(job.id)
    assert failed.status == "failed" and "signal 9" in failed.error and "training" in failed.error


def test_a_worker_lost_across_a_restart_is_failed(manager):
    job = manager.jobs.create(method="dpo", spec={}, created_by="op1")
    proc = stand_in(job.id, "pass")
    proc.wait()
    manager.jobs.update(job.id, pid=proc.pid, status="running")  # no Popen: as after a restart
    manager.check()
    assert "worker lost" in manager.jobs.get(job.id).error


def test_cancel_stops_the_worker_group(manager):
    job = manager.jobs.create(method="dpo", spec={}, created_by="op1")
    proc = stand_in(job.id, "import time; time.sleep(60)")
    manager._procs[job.id] = proc
    manager.jobs.update(job.id, pid=proc.pid, status="running")
    assert wait_until(lambda: "agentstack.alignment.worker" in open(f"/proc/{proc.pid}/cmdline").read())
    assert manager.cancel(job.id).status == "cancelling"
    assert wait_until(lambda: proc.poll() is not None)
    manager.check()
    cancelled = manager.jobs.get(job.id)
    assert cancelled.status == "cancelled" and cancelled.finished_at
    with pytest.raises(ConflictError, match="already cancelled"):
        manager.cancel(job.id)


class Deployer:
    def __init__(self):
        self.promoted = []

    async def promote(self, version, **kwargs):
        self.promoted.append((version, kwargs))
        return {"active": version, "previous": "base", "changed": True}


def test_passed_candidates_are_promoted_once_and_audited(manager):
    manager.deployer = Deployer()
    specs = {"pass": {"promote": True}, "reject": {"promote": True}, "manual": {"promote": False}}
    ids = {}
    for name, spec in specs.items():
        job = manager.jobs.create(method="dpo", spec=spec, created_by="op1")
        manager.jobs.update(job.id, status="succeeded", version=f"v-{name}",
                            gate={"passed": name != "reject", "summary": "..."})
        ids[name] = job.id
    asyncio.run(manager.promote_passed())
    asyncio.run(manager.promote_passed())  # nothing twice
    assert [v for v, _ in manager.deployer.promoted] == ["v-pass"]
    status = {name: manager.jobs.get(i).promotion["status"] for name, i in ids.items()}
    assert status == {"pass": "promoted", "reject": "rejected_by_gate", "manual": "not_requested"}
    audit = manager.audit.list(action="model.promote")
    assert audit[0]["key_id"] == "op1" and audit[0]["detail"]["auto"] is True


def test_a_worker_on_another_host_is_judged_by_its_heartbeat(manager):
    job = manager.jobs.create(method="dpo", spec={}, created_by="op1")
    manager.jobs.update(job.id, status="running", host="other-host", pid=1, heartbeat_at=time.time())
    assert manager.check() == []  # beating: adopted, left running
    manager.jobs.update(job.id, heartbeat_at=time.time() - manager.settings.alignment.worker_timeout_s - 5)
    assert manager.check() == [job.id]
    lost = manager.jobs.get(job.id)
    assert lost.status == "failed" and "no heartbeat" in lost.error


def test_a_cancel_written_by_any_replica_stops_the_worker_through_its_heartbeat(manager, settings):
    """The worker's own heartbeat thread reads `cancelling` and stops it: no signal from a replica."""
    job = manager.jobs.create(method="dpo", spec={}, created_by="op1")
    code = ("import json, os, signal, sys, threading, time\n"
            "from agentstack.alignment.jobs import JobStore\n"
            "from agentstack.alignment.worker import heartbeat\n"
            "from agentstack.config import load_settings\n"
            "from agentstack.db import open_db\n"
            "signal.signal(signal.SIGTERM, lambda *a: sys.exit(3))\n"
            "jobs = JobStore(open_db(load_settings()), sys.argv[2])\n"
            "threading.Thread(target=heartbeat, args=(jobs, sys.argv[1], 0.1, 5.0, threading.Event()),"
            " daemon=True).start()\n"
            "time.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, "-c", code, job.id, str(manager.jobs.jobs_dir)],
                            start_new_session=True)
    try:
        manager.jobs.update(job.id, status="running", host="other-host")  # not signalable from here
        assert wait_until(lambda: manager.jobs.get(job.id).heartbeat_at is not None)
        manager.jobs.update(job.id, status="cancelling")  # what POST .../cancel on another replica writes
        assert wait_until(lambda: proc.poll() is not None, timeout=20)
        assert proc.returncode == 3
    finally:
        if proc.poll() is None:
            proc.kill()


def test_the_monitor_keeps_its_lease_through_a_long_pass(manager):
    """A pass longer than the lease (a promotion waiting for replicas) must not let a second replica
    run the monitor meanwhile; once the holder stops renewing, another takes over."""
    from agentstack.state.records import Lease

    manager.lease.ttl_s = 0.3
    other = Lease(manager.db, "monitor", "other-replica", 0.3)
    seen = []

    async def long_pass():
        for _ in range(5):
            await asyncio.sleep(0.2)
            seen.append(await asyncio.to_thread(other.acquire))

    async def scenario():
        assert await asyncio.to_thread(manager.lease.acquire)
        await manager._holding_lease(long_pass())

    asyncio.run(scenario())
    assert seen == [False] * 5
    time.sleep(0.4)
    assert other.acquire()

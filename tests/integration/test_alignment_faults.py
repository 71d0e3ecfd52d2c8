"""Faults of a running job: a worker killed outright is marked failed with its log, and its
training process dies with it; a cancelled job stops; serving is untouched throughout."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import httpx
import pytest

from tests.integration.alignment_support import (
    APP,
    OP,
    alignment_server,
    fast_alignment,
    seed_siblings,
    tiny_job,
    trainer_pids,
    vote_all,
    wait_job,
)

pytestmark = pytest.mark.integration

LONG = {"hyperparameters": {"max_steps": 10_000}, "thresholds": {"scrub_pii": False}}


@pytest.fixture(scope="module")
def server(embedded_engine, tmp_path_factory):
    with alignment_server(embedded_engine, tmp_path_factory.mktemp("align-faults"), **fast_alignment()) as srv:
        vote_all(srv.url, seed_siblings(srv.app.state.services.db, 8))
        yield srv


def training(job: dict) -> bool:
    ended = job["status"] in ("succeeded", "failed", "cancelled")
    return ended or (job["status"] == "running" and job["stage"] == "training" and bool(trainer_pids(job["id"])))


def serves(url: str) -> str:
    r = httpx.post(f"{url}/v1/chat/completions", headers=APP, timeout=120,
                   json={"model": "agentstack", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 3})
    assert r.status_code == 200
    return r.json()["model_version"]


def test_killed_worker_fails_the_job_with_its_log(server):
    job = httpx.post(f"{server.url}/v1/admin/alignment/jobs", headers=OP, json=tiny_job(**LONG)).json()
    running = wait_job(server.url, job["id"], until=training, timeout=200)
    assert running["status"] == "running", running
    trainers = trainer_pids(job["id"])
    os.kill(running["pid"], signal.SIGKILL)
    failed = wait_job(server.url, job["id"])
    assert failed["status"] == "failed" and "signal 9" in failed["error"] and "training" in failed["error"]
    assert any("stage: training" in line for line in failed["log_tail"])
    deadline = time.monotonic() + 20
    while any(Path(f"/proc/{p}").exists() for p in trainers) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert trainer_pids(job["id"]) == []  # the training process died with its worker
    assert serves(server.url) == "SmolLM2-135M-Instruct"


def test_cancel_stops_a_running_job(server):
    job = httpx.post(f"{server.url}/v1/admin/alignment/jobs", headers=OP, json=tiny_job(**LONG)).json()
    wait_job(server.url, job["id"], until=training, timeout=200)
    r = httpx.post(f"{server.url}/v1/admin/alignment/jobs/{job['id']}/cancel", headers=OP)
    assert r.status_code == 200 and r.json()["status"] in ("cancelling", "cancelled")
    done = wait_job(server.url, job["id"], timeout=60)
    assert done["status"] == "cancelled" and trainer_pids(job["id"]) == []
    again = httpx.post(f"{server.url}/v1/admin/alignment/jobs/{job['id']}/cancel", headers=OP)
    assert again.status_code == 409
    assert httpx.post(f"{server.url}/v1/admin/alignment/jobs/job-nope/cancel", headers=OP).status_code == 404
    assert serves(server.url) == "SmolLM2-135M-Instruct"
    cancels = httpx.get(f"{server.url}/v1/admin/audit", headers=OP, params={"action": "alignment.job.cancel"}).json()
    assert [(a["target"], a["outcome"]) for a in cancels["data"]][-1] == (job["id"], "ok")

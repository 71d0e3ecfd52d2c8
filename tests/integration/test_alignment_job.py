"""One real round through the server: votes over HTTP → a DPO job in a worker process (scrubbed
data, two training steps in a training process) → a registered version → the gate → automatic
promotion → served; then the CLI reads it all back and rolls back. Plus the refusals: too little
data, a second job while one runs."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.integration.alignment_support import (
    APP,
    OP,
    alignment_server,
    fast_alignment,
    seed_siblings,
    tiny_job,
    vote_all,
    wait_job,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def server(embedded_engine, tmp_path_factory):
    with alignment_server(embedded_engine, tmp_path_factory.mktemp("align-job"),
                          **fast_alignment(keep_datasets=True)) as srv:
        yield srv


@pytest.fixture(scope="module")
def finished_job(server):
    svc = server.app.state.services
    vote_all(server.url, seed_siblings(svc.db, 10))
    refused = httpx.post(f"{server.url}/v1/admin/alignment/jobs", headers=OP,
                         json=tiny_job(thresholds={"min_pairs": 100}))
    assert refused.status_code == 409, refused.text
    error = refused.json()["error"]
    assert error["code"] == "insufficient_data" and "needs at least 100 training pairs" in error["message"]
    r = httpx.post(f"{server.url}/v1/admin/alignment/jobs", headers=OP, json=tiny_job())
    assert r.status_code == 202, r.text
    job = r.json()
    assert job["status"] in ("queued", "running") and job["spec"]["method"] == "dpo"
    second = httpx.post(f"{server.url}/v1/admin/alignment/jobs", headers=OP, json=tiny_job())
    assert second.status_code == 409 and "one job runs at a time" in second.json()["error"]["message"]
    return wait_job(server.url, job["id"])


def test_the_round_trains_gates_and_promotes(server, finished_job):
    job = finished_job
    assert job["status"] == "succeeded", (job["error"], "\n".join(job["log_tail"]))
    assert job["stage"] == "done" and job["version"] == "v1-dpo" and job["current_version"] == "SmolLM2-135M-Instruct"
    history = job["metrics"]["policy"]["history"]
    assert [h["step"] for h in history] == [1, 2] and all("rewards/margins" in h and "loss" in h for h in history)
    assert job["metrics"]["policy"]["summary"]["parameters"]["changed_tensors"] > 0
    data = job["data"]
    assert data["pairs"]["train"] + data["pairs"]["heldout"] == 10 and data["pairs"]["heldout"] >= 1
    assert data["pii_replaced"].get("EMAIL_ADDRESS", 0) >= 10
    gate = job["gate"]
    assert gate["passed"] is True, gate["summary"]
    checks = {c["name"]: c for c in gate["checks"]}
    assert set(checks) == {"kl", "perplexity", "pair_preference", "win_rate", "refusal", "compliance"}
    assert checks["kl"]["value"] >= 0 and checks["kl"]["detail"]["tokens"] > 0
    assert checks["refusal"]["detail"]["n"] == 2 and checks["win_rate"]["status"] == "skipped"
    # the worker judged the candidate on the configured engine kind (llamacpp, the default): as the GGUF
    # LoRA that will serve it, with the converter recorded
    served = gate["served_format"]
    assert served["engine"] == "llamacpp" and served["format"] == "Q4_1"
    assert served["adapter"]["converter"].startswith("agentstack.engines.llamacpp.lora/")
    assert job["promotion"]["status"] == "promoted" and job["promotion"]["active"] == "v1-dpo"


def test_the_new_version_serves_and_is_recorded(server, finished_job):
    r = httpx.post(f"{server.url}/v1/chat/completions", headers=APP, timeout=120,
                   json={"model": "agentstack", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4})
    assert r.json()["model_version"] == "v1-dpo"
    models = httpx.get(f"{server.url}/v1/admin/models", headers=OP).json()
    assert models["active"] == "v1-dpo"
    v1 = next(m for m in models["data"] if m["version"] == "v1-dpo")
    assert v1["gate"]["passed"] and v1["loaded"] and v1["data"]["content_hash"]
    assert models["deployments"][-1]["version"] == "v1-dpo"
    version_dir = server.app.state.services.settings.registry_path / "versions" / "v1-dpo"
    meta = json.loads((version_dir / "metadata.json").read_text())
    assert meta["base_model"]["name"] == "SmolLM2-135M-Instruct" and meta["data_window"] == {"since": None,
                                                                                               "until": None}
    assert meta["config"]["trainers"]["policy"]["beta"] == 0.1 and meta["job_id"] == finished_job["id"]
    assert (version_dir / "adapter" / "adapter_model.safetensors").is_file() and (version_dir / "gate.json").is_file()
    audit = httpx.get(f"{server.url}/v1/admin/audit", headers=OP).json()["data"]
    actions = [(a["action"], a["outcome"]) for a in audit]
    assert ("alignment.job.submit", "ok") in actions and ("alignment.job.submit", "refused") in actions
    auto = next(a for a in audit if a["action"] == "model.promote")
    assert auto["detail"]["auto"] is True and auto["key_id"] == "op1"


def test_training_data_was_scrubbed_before_training(server, finished_job):
    data_dir = server.app.state.services.settings.data_dir / "alignment" / "jobs" / finished_job["id"] / "data"
    text = "".join(p.read_text() for p in data_dir.glob("*.jsonl"))
    assert "<EMAIL_ADDRESS>" in text and "corp.se" not in text and "Lindqvist" not in text
    log = "\n".join(finished_job["log_tail"])
    assert "corp.se" not in log and "Lindqvist" not in log


def test_cli_reads_the_job_and_rolls_back(server, finished_job, monkeypatch):
    from typer.testing import CliRunner

    from agentstack.cli import commands  # noqa: F401
    from agentstack.cli.app import app
    from tests.conftest import OPERATOR_KEY

    monkeypatch.setenv("AGENTSTACK_CLIENT__URL", server.url)
    monkeypatch.setenv("AGENTSTACK_CLIENT__API_KEY", OPERATOR_KEY)
    runner = CliRunner()
    jobs = runner.invoke(app, ["align", "jobs", "--json"])
    assert jobs.exit_code == 0 and json.loads(jobs.stdout)[0]["id"] == finished_job["id"]
    status = runner.invoke(app, ["align", "status", finished_job["id"], "--json"])
    assert json.loads(status.stdout)["gate"]["passed"] is True
    human = runner.invoke(app, ["align", "status", finished_job["id"], "--log", "3"])
    assert human.exit_code == 0 and "PASS" in human.stdout
    assert runner.invoke(app, ["align", "status", "job-nope"]).exit_code == 2
    rolled = runner.invoke(app, ["align", "rollback", "--json"])
    assert rolled.exit_code == 0, rolled.output
    assert json.loads(rolled.stdout) | {"evicted": []} == {"active": "SmolLM2-135M-Instruct", "previous": "v1-dpo",
                                                          "changed": True, "evicted": []}
    again = runner.invoke(app, ["align", "promote", "v1-dpo"])
    assert again.exit_code == 0 and "serving v1-dpo" in again.stdout
    assert runner.invoke(app, ["align", "promote", "v9-nope"]).exit_code == 2
    models = json.loads(runner.invoke(app, ["align", "models", "--json"]).stdout)
    assert models["active"] == "v1-dpo"
    stats = json.loads(runner.invoke(app, ["feedback", "stats", "--json"]).stdout)
    assert stats["total"]["up"] == 10 and stats["total"]["down"] == 10
    assert runner.invoke(app, ["align", "rollback", "SmolLM2-135M-Instruct"]).exit_code == 0

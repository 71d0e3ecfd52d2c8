"""Security hardening on a real server (SmolLM2, uvicorn on loopback): DNS rebinding in local mode,
readiness that no caller can turn into generations, app keys and rolled-back versions, keyed
pseudonyms in the audit log, and the environment the real alignment worker and trainer get
(issue 12)."""

from __future__ import annotations

import hashlib
import logging
import time
from pathlib import Path

import httpx
import pytest

from tests.integration.alignment_support import (
    APP,
    OP,
    alignment_server,
    fast_alignment,
    random_adapter,
    register,
    seed_siblings,
    tiny_job,
    trainer_pids,
    vote_all,
    wait_job,
)

pytestmark = pytest.mark.integration


def test_local_mode_refuses_a_rebound_host_name(live_server):
    """After DNS rebinding, the attacker's page talks to 127.0.0.1 under its own name: Host and
    Origin both say evil.example, so the same-origin check passes; the Host allowlist does not."""
    with live_server(auth={"keys": []}) as srv:
        port = srv.url.rsplit(":", 1)[1]
        rebound = {"Host": f"evil.example:{port}", "Origin": f"http://evil.example:{port}"}
        for method, path in (("GET", "/v1/admin/feedback/export"), ("DELETE", "/v1/admin/users/alice/data"),
                             ("GET", "/v1/conversations"), ("GET", "/admin")):
            r = httpx.request(method, srv.url + path, headers=rebound, timeout=60)
            assert r.status_code == 403, (method, path, r.status_code)
            assert r.json()["error"]["code"] == "host_not_allowed"
        assert srv.app.state.services.audit.list() == []  # nothing was done
        for host in (f"127.0.0.1:{port}", f"localhost:{port}"):
            r = httpx.get(srv.url + "/v1/admin/audit", headers={"Host": host}, timeout=60)
            assert r.status_code == 200, host
        assert httpx.get(srv.url + "/v1/conversations", timeout=60).status_code == 200  # plain local use


def _generations(svc) -> float:
    return sum(s.value for metric in svc.metrics.finished.collect() for s in metric.samples
               if s.name.endswith("_total"))


def test_readyz_is_answered_from_the_servers_own_check(live_server):
    with live_server() as srv:
        svc = srv.app.state.services
        deadline = time.monotonic() + 120
        while httpx.get(srv.url + "/readyz", timeout=60).status_code != 200:
            assert time.monotonic() < deadline, "never ready"
            time.sleep(0.2)
        before = _generations(svc)
        assert before >= 1  # the background check did generate
        for _ in range(40):
            r = httpx.get(srv.url + "/readyz", timeout=60)
            assert r.status_code == 200 and r.json()["status"] == "ready"
            assert r.json()["model_version"] == "SmolLM2-135M-Instruct"
        # 40 public calls; at most one background check may have fallen in between
        assert _generations(svc) - before <= 1


@pytest.fixture(scope="module")
def deploy_server(embedded_engine, tmp_path_factory):
    with alignment_server(embedded_engine, tmp_path_factory.mktemp("hardening-deploy")) as srv:
        yield srv


def _chat(url: str, model: str, headers: dict) -> httpx.Response:
    return httpx.post(f"{url}/v1/chat/completions", headers=headers, timeout=120,
                      json={"model": model, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2})


def test_app_keys_cannot_select_a_rolled_back_version(deploy_server, embedded_engine, tmp_path):
    url = deploy_server.url
    root = deploy_server.app.state.services.settings.registry_path
    version = register(root, random_adapter(embedded_engine, tmp_path / "a", seed=7, scale=0.3))
    r = httpx.post(f"{url}/v1/admin/models/{version}/promote", headers=OP, timeout=120)
    assert r.status_code == 200, r.text
    assert _chat(url, version, APP).status_code == 200  # the active version, by name
    r = httpx.post(f"{url}/v1/admin/models/rollback", headers=OP, json={"version": None}, timeout=120)
    assert r.json()["active"] == "SmolLM2-135M-Instruct"
    assert version in httpx.get(f"{url}/v1/admin/models", headers=OP, timeout=60).json()["loaded"]  # still loaded...
    refused = _chat(url, version, APP)
    assert refused.status_code == 403, refused.text  # ...but no longer for app keys
    assert "selectable" in refused.json()["error"]["message"]
    assert version not in [m["id"] for m in httpx.get(f"{url}/v1/models", headers=APP, timeout=60).json()["data"]]
    assert _chat(url, version, OP).status_code == 200  # operators keep full access
    assert _chat(url, "agentstack", APP).json()["model_version"] == "SmolLM2-135M-Instruct"

    r = httpx.post(f"{url}/v1/admin/models/{version}/selectable", headers=OP, json={"selectable": True}, timeout=60)
    assert r.status_code == 200 and r.json()["changed"]
    assert _chat(url, version, APP).status_code == 200
    assert httpx.post(f"{url}/v1/admin/models/{version}/selectable", headers=APP, timeout=60).status_code == 403
    r = httpx.post(f"{url}/v1/admin/models/{version}/selectable", headers=OP, json={"selectable": False}, timeout=60)
    assert r.status_code == 200 and _chat(url, version, APP).status_code == 403
    assert httpx.post(f"{url}/v1/admin/models/v999-none/selectable", headers=OP, timeout=60).status_code == 404
    audit = deploy_server.app.state.services.audit.list(action="model.selectable")
    assert [(a["target"], a["detail"]["selectable"], a["outcome"]) for a in audit][:3] == [
        ("v999-none", True, "error"), (version, False, "ok"), (version, True, "ok")]
    assert all(a["key_id"] == "op1" for a in audit)


# Every operator route that acts, with a request that reaches its handler (most are refused there:
# unknown names). A new operator route fails this test until it is listed here and audited.
OPERATOR_ACTIONS = {
    ("POST", "/v1/load_lora_adapter"): {"json": {"lora_name": "nope", "lora_path": "/no/such"}},
    ("POST", "/v1/unload_lora_adapter"): {"json": {"lora_name": "nope"}},
    ("GET", "/v1/admin/feedback/export"): None,  # audited as a read of user data; slow (PII scrubber), see feedback tests
    ("POST", "/v1/admin/alignment/jobs"): {"json": {"method": "dpo"}},
    ("POST", "/v1/admin/alignment/jobs/{job_id}/cancel"): {},
    ("POST", "/v1/admin/models/{version}/promote"): {},
    ("POST", "/v1/admin/models/rollback"): {"json": {"version": "v999-none"}},
    ("POST", "/v1/admin/models/{version}/selectable"): {"json": {"selectable": False}},
    ("DELETE", "/v1/admin/users/{user_id}/data"): {},
    ("POST", "/v1/indexes/{name}/documents"): {"json": {"documents": [{"name": "a.md", "text": "x"}]}},
    ("DELETE", "/v1/indexes/{name}/documents/{ref}"): {},
    ("POST", "/v1/indexes/{name}/rebuild"): {},
}


def test_every_operator_action_is_audited_even_when_refused(deploy_server):
    from tests.integration.test_auth_matrix import OPERATOR, ROUTES, _concrete

    acting = {route for route, role in ROUTES.items() if role == OPERATOR and route[0] != "GET"}
    assert acting <= set(OPERATOR_ACTIONS), f"list the new operator routes here: {acting - set(OPERATOR_ACTIONS)}"
    audit = deploy_server.app.state.services.audit
    for (method, path), request in OPERATOR_ACTIONS.items():
        if request is None:
            continue
        before = len(audit.list(limit=1000))
        r = httpx.request(method, deploy_server.url + _concrete(path), headers=OP, timeout=120, **request)
        assert r.status_code < 500, (path, r.text)
        after = audit.list(limit=1000)
        assert len(after) == before + 1, f"{method} {path} ({r.status_code}) left no audit entry"
        assert after[0]["key_id"] == "op1"


def test_deleted_users_are_named_by_a_keyed_pseudonym(live_server):
    with live_server() as srv:
        r = httpx.delete(f"{srv.url}/v1/admin/users/alice/data", headers=OP, timeout=60)
        assert r.status_code == 200
        entry = srv.app.state.services.audit.list(action="privacy.delete_user")[0]
        unkeyed = hashlib.sha256(b"alice").hexdigest()[:16]  # guessable ids could be looked up in a table
        assert unkeyed not in entry["target"] and "alice" not in str(entry)
        from agentstack.feedback.privacy import pseudonym

        assert entry["target"] == r.json()["user"] == pseudonym("alice", srv.app.state.services.pseudonym_key())
    key = "replica-shared-key-0123456789"  # replicas given one key name the user alike
    names = []
    for _ in range(2):
        with live_server(privacy={"pseudonym_key": key}) as srv:
            names.append(httpx.delete(f"{srv.url}/v1/admin/users/alice/data", headers=OP, timeout=60).json()["user"])
    assert names[0] == names[1] == pseudonym("alice", key.encode()) != entry["target"]


def _environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode(errors="replace").split("=", 1) for item in raw if b"=" in item)


def test_worker_and_trainer_environments_hold_no_secrets(embedded_engine, tmp_path, monkeypatch):
    """The server's environment holds keys and an arbitrary secret; the real worker and its real
    training process, read from /proc while they run, have neither, but have what training needs."""
    with alignment_server(embedded_engine, tmp_path / "srv", **fast_alignment()) as srv:
        vote_all(srv.url, seed_siblings(srv.app.state.services.db, 8))
        monkeypatch.setenv("SECRET_CANARY", "canary-8f1d2c")
        monkeypatch.setenv("AGENTSTACK_AUTH__KEYS", '[{"id": "x", "role": "operator", "key": "canary-key-0123456789"}]')
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
        monkeypatch.setenv("NCCL_DEBUG", "WARN")
        job = httpx.post(f"{srv.url}/v1/admin/alignment/jobs", headers=OP, timeout=60,
                         json=tiny_job(hyperparameters={"max_steps": 10_000}, thresholds={"scrub_pii": False})).json()

        def training(j: dict) -> bool:
            return j["status"] not in ("queued", "running") or (j["stage"] == "training" and bool(trainer_pids(j["id"])))

        running = wait_job(srv.url, job["id"], until=training, timeout=300)
        assert running["status"] == "running", running
        try:
            envs = {"worker": _environ(running["pid"]), "trainer": _environ(trainer_pids(job["id"])[0])}
        finally:
            httpx.post(f"{srv.url}/v1/admin/alignment/jobs/{job['id']}/cancel", headers=OP, timeout=60)
        for who, env in envs.items():
            assert "SECRET_CANARY" not in env and "canary-8f1d2c" not in str(env), who
            assert "AGENTSTACK_AUTH__KEYS" not in env and "canary-key" not in str(env), who
            assert env["HF_HUB_OFFLINE"] == "1" and env["OMP_NUM_THREADS"] == "1", who
            assert env["NCCL_DEBUG"] == "WARN" and "CUDA_VISIBLE_DEVICES" in env and env["PATH"], who
        ended = wait_job(srv.url, job["id"], timeout=120)
        assert ended["status"] == "cancelled"


def test_chat_text_never_reaches_the_logs(live_server, caplog):
    secret_text = "My name is Ottilie Vandersloot and my card is 4111 1111 1111 1111"
    with caplog.at_level(logging.DEBUG), live_server() as srv:
        r = httpx.post(f"{srv.url}/v1/chat", headers={**APP, "X-User-Id": "ottilie"}, timeout=120,
                       json={"message": secret_text, "params": {"max_tokens": 8}})
        assert r.status_code == 200
        answer = r.json()["answer"]
        vote = httpx.post(f"{srv.url}/v1/feedback", headers={**APP, "X-User-Id": "ottilie"},
                          json={"response_id": r.json()["id"], "rating": "down", "comment": secret_text}, timeout=60)
        assert vote.status_code == 200
    logged = "\n".join(rec.getMessage() for rec in caplog.records)
    assert "Vandersloot" not in logged and "4111" not in logged
    assert not answer.strip() or answer.strip()[:20] not in logged

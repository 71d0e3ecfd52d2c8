"""Security hardening without a model: the test engine is not a setting, child processes get an
allowlisted environment, audit pseudonyms are keyed, unrated chat expires by default, and local
mode answers only loopback Host names (issue 12)."""

from __future__ import annotations

import hashlib
import logging
import os
import stat
import time

import pytest

from agentstack.config import load_settings
from agentstack.errors import ConfigError

pytestmark = pytest.mark.unit


# -- `scripted` is not an engine.kind --------------------------------------------------------------
def test_the_obedient_test_engine_cannot_be_configured(monkeypatch):
    with pytest.raises(ConfigError, match="scripted.*test engine"):
        load_settings(engine={"kind": "scripted"})
    monkeypatch.setenv("AGENTSTACK_ENGINE__KIND", "scripted")
    with pytest.raises(ConfigError, match="AGENTSTACK_ENGINE__KIND"):
        load_settings()
    from agentstack.engines.scripted import ScriptedEngine  # still importable for tests and bench/

    assert ScriptedEngine().kind == "scripted"


# -- child environments ------------------------------------------------------------------------------
def test_child_environment_passes_the_allowlist_only():
    from agentstack.child_env import child_environment, secret_setting_vars

    parent = {"PATH": "/usr/bin", "HOME": "/root", "CUDA_VISIBLE_DEVICES": "0,1", "NCCL_DEBUG": "INFO",
              "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "8", "LC_ALL": "C.UTF-8", "PYTHONPATH": "/src",
              "AGENTSTACK_CONFIG": "/etc/agentstack.toml", "AGENTSTACK_ENGINE__MAX_BATCH_SIZE": "4",
              "AGENTSTACK_AUTH__KEYS": '[{"id":"a","role":"operator","key":"0123456789abcdef"}]',
              "AGENTSTACK_AUTH": '{"session_secret": "x"}', "AGENTSTACK_PRIVACY__HASH_SALT": "salt",
              "AGENTSTACK_UNKNOWN": "?", "SECRET_CANARY": "canary", "HF_TOKEN": "hf_x", "AWS_SECRET_ACCESS_KEY": "a",
              "OPENAI_API_KEY": "sk-x", "PGPASSWORD": "pw"}
    env = child_environment({"OMP_NUM_THREADS": "1"}, secrets={"AGENTSTACK_PRIVACY__HASH_SALT": "given"},
                            parent=parent)
    assert env == {"PATH": "/usr/bin", "HOME": "/root", "CUDA_VISIBLE_DEVICES": "0,1", "NCCL_DEBUG": "INFO",
                   "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "LC_ALL": "C.UTF-8", "PYTHONPATH": "/src",
                   "AGENTSTACK_CONFIG": "/etc/agentstack.toml", "AGENTSTACK_ENGINE__MAX_BATCH_SIZE": "4",
                   "AGENTSTACK_PRIVACY__HASH_SALT": "given"}
    # every secret setting is known as one, from the settings tree itself
    assert {"AGENTSTACK_AUTH__KEYS", "AGENTSTACK_AUTH__SESSION_SECRET", "AGENTSTACK_PRIVACY__HASH_SALT",
            "AGENTSTACK_PRIVACY__PSEUDONYM_KEY", "AGENTSTACK_ENGINE__API_KEY",
            "AGENTSTACK_CLIENT__API_KEY"} <= secret_setting_vars()


def test_worker_settings_file_holds_no_secret(tmp_path):
    from agentstack.alignment.manager import worker_settings

    settings = load_settings(auth={"keys": [{"id": "a", "role": "app", "key": "k" * 20}], "session_secret": "s" * 32},
                             privacy={"hash_salt": "salt-value", "pseudonym_key": "p" * 20},
                             engine={"api_key": "engine-key"}, client={"api_key": "client-key"})
    text = str(worker_settings(settings))
    for secret in ("k" * 20, "s" * 32, "salt-value", "p" * 20, "engine-key", "client-key", "**********"):
        assert secret not in text
    # the salt and the engine key travel in the environment, so the file leaves them out entirely
    data = worker_settings(settings)
    assert "hash_salt" not in data["privacy"] and "api_key" not in data["engine"]
    assert data["auth"]["keys"] == [] and data["privacy"]["pseudonym_key"] is None


# -- audit pseudonyms --------------------------------------------------------------------------------
def test_pseudonyms_are_keyed_and_shared_by_replicas_with_one_key(tmp_path):
    from agentstack.feedback.privacy import pseudonym, pseudonym_key

    one = load_settings(data_dir=tmp_path / "a", privacy={"pseudonym_key": "shared-key-0123456789"})
    two = load_settings(data_dir=tmp_path / "b", privacy={"pseudonym_key": "shared-key-0123456789"})
    name = pseudonym("alice", pseudonym_key(one))
    assert name == pseudonym("alice", pseudonym_key(two))  # replicas agree
    assert name != pseudonym("bob", pseudonym_key(one))
    assert hashlib.sha256(b"alice").hexdigest()[:16] not in name  # not the guessable unkeyed hash
    with pytest.raises(ConfigError, match="at least 16"):
        load_settings(privacy={"pseudonym_key": "short"})


def test_unset_pseudonym_key_is_made_once_per_data_dir_and_warns(tmp_path, caplog):
    from agentstack.feedback.privacy import KEY_FILE, pseudonym, pseudonym_key

    a = load_settings(data_dir=tmp_path / "a")
    with caplog.at_level(logging.WARNING):
        key = pseudonym_key(a)
    assert "replicas" in caplog.text and "pseudonym_key" in caplog.text
    path = tmp_path / "a" / KEY_FILE
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert pseudonym_key(a) == key  # kept, so pseudonyms stay stable across restarts
    b = load_settings(data_dir=tmp_path / "b")
    assert pseudonym("alice", pseudonym_key(b)) != pseudonym("alice", key)  # what the warning is about


def test_processes_sharing_a_data_dir_make_one_pseudonym_key(tmp_path):
    """Workers starting together all read the one key that won, never an empty or partial file."""
    import multiprocessing

    from agentstack.feedback.privacy import KEY_FILE

    with multiprocessing.get_context("spawn").Pool(4) as pool:
        keys = pool.map(_key_in, [str(tmp_path)] * 16)
    assert len(set(keys)) == 1 and len(keys[0]) == 64
    assert (tmp_path / KEY_FILE).read_text().strip() == keys[0]
    assert [p.name for p in tmp_path.iterdir()] == [KEY_FILE]  # no temporary file left behind


def _key_in(data_dir: str) -> str:
    from agentstack.feedback.privacy import pseudonym_key

    return pseudonym_key(load_settings(data_dir=data_dir)).decode()


# -- chat retention -----------------------------------------------------------------------------------
def test_unrated_chat_expires_by_default_rated_stays(tmp_path):
    from agentstack.db import open_db
    from agentstack.feedback.privacy import purge_unrated_chat
    from agentstack.feedback.store import FeedbackStore
    from agentstack.history import ConversationStore, ResponseRecord, ResponseStore

    settings = load_settings(data_dir=tmp_path)
    assert settings.privacy.chat_retention_days == 30  # the documented default
    db = open_db(settings)
    now = time.time()
    conversations, responses = ConversationStore(db), ResponseStore(db)

    def answer(rid: str, conv: str | None, age_days: float) -> None:
        responses.record(ResponseRecord(id=rid, key_id="app1", user_id="u", endpoint="chat", model="m",
                                        model_version="v", messages=[{"role": "user", "content": "hi"}],
                                        params={}, answer="hello", conversation_id=conv,
                                        created_at=now - age_days * 86400))

    old = conversations.create(key_id="app1", user_id="u", mode="plain", index_name=None, title="old")
    rated = conversations.create(key_id="app1", user_id="u", mode="plain", index_name=None, title="rated")
    live = conversations.create(key_id="app1", user_id="u", mode="plain", index_name=None, title="live")
    answer("r-old", old, 40)
    answer("r-rated", rated, 40)
    answer("r-rated-sibling", rated, 40)
    answer("r-live-early", live, 40)  # an old turn of a conversation still going on
    answer("r-live", live, 1)
    answer("r-api-old", None, 40)  # /v1/chat/completions, outside any conversation
    answer("r-api-new", None, 1)
    FeedbackStore(db).vote(response_id="r-rated", key_id="app1", user_id="u", rating="up")
    from agentstack.storage.schema import conversations as C

    with db.tx() as conn:
        conn.execute(C.update().where(C.c.id.in_([old, rated])).values(updated_at=now - 40 * 86400))
    counts = purge_unrated_chat(db, settings.privacy.chat_retention_days, now=now)
    left = {r["id"] for r in db.query("SELECT id FROM responses")}
    assert left == {"r-rated", "r-live-early", "r-live", "r-api-new"}
    assert {r["id"] for r in db.query("SELECT id FROM conversations")} == {rated, live}
    assert counts["responses"] == 3 and counts["conversations"] == 1
    assert purge_unrated_chat(db, None)["responses"] == 0  # unset = keep


# -- local mode Host check -------------------------------------------------------------------------------
@pytest.mark.parametrize("host,allowed", [("127.0.0.1:8000", True), ("localhost:8000", True), ("[::1]:8000", True),
                                          ("127.0.0.2", True), ("LOCALHOST.", True), ("agent.lan:8000", True),
                                          ("evil.example:8000", False), ("127.0.0.1.evil.example", False),
                                          ("localhost.evil.example", False), ("0.0.0.0:8000", False)])
def test_local_mode_host_names(host, allowed):
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from server.middleware import LocalHostCheck

    app = FastAPI()

    @app.post("/act")
    def act() -> dict:
        return {"ok": True}

    app.add_middleware(LocalHostCheck, allowed=["agent.lan"])
    r = TestClient(app).post("/act", headers={"Host": host, "Origin": f"http://{host}"})
    assert (r.status_code == 200) == allowed, r.text
    if not allowed:
        assert r.status_code == 403 and r.json()["error"]["code"] == "host_not_allowed"
        assert "server.allowed_hosts" in r.json()["error"]["message"]

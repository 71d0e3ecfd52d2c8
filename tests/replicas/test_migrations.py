"""Migrations: an existing SQLite deployment is carried over without losing anything (its
``_migrations`` history becomes the Alembic baseline; active.json, deployments.jsonl and eval report
metadata move into the database), PostgreSQL is migrated once by `agentstack db migrate` (also by
several processes at once), and a replica on a schema that is not current refuses to start and
names the command."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "agentstack.cli", *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT), **env})


@pytest.mark.unit
def test_a_pre_alembic_sqlite_deployment_is_carried_over(settings):
    from agentstack.db import LEGACY_MIGRATIONS, open_db
    from agentstack.storage import migrate
    from agentstack.storage.sqlite import Database as LegacyDatabase

    old = LegacyDatabase(settings.db_path, LEGACY_MIGRATIONS)  # what earlier releases made
    with old.tx() as conn:
        conn.execute("INSERT INTO audit_log (at, key_id, action, outcome) VALUES (1.0, 'op1', 'model.promote', 'ok')")
        conn.execute("INSERT INTO alignment_jobs (id, method, status, spec_json, created_by, created_at, updated_at) "
                     "VALUES ('job-old', 'dpo', 'succeeded', '{}', 'op1', 1.0, 1.0)")
    old.close()
    registry = settings.registry_path
    registry.mkdir(parents=True)
    (registry / "active.json").write_text(json.dumps({"active": "v2-dpo", "previous": "v1-dpo"}))
    (registry / "deployments.jsonl").write_text(
        json.dumps({"at": 5.0, "action": "promote", "version": "v1-dpo", "previous": "base", "key_id": "op1"}) + "\n"
        + json.dumps({"at": 6.0, "action": "promote", "version": "v2-dpo", "previous": "v1-dpo", "key_id": "op1",
                      "job_id": "job-old"}) + "\n" + '{"torn')
    run = settings.eval_path / "tiny-abc"
    run.mkdir(parents=True)
    (run / "report.json").write_text(json.dumps({"schema": "agentstack.eval.report/1", "run_id": "tiny-abc",
                                                 "suite": {"name": "tiny"}, "finished_at": "2025-01-01T00:00:00Z",
                                                 "n": 3}))

    db = open_db(settings)
    try:
        assert migrate.current(db) == migrate.head()
        assert db.query("SELECT action FROM audit_log")[0]["action"] == "model.promote"
        assert db.query("SELECT id, lane FROM alignment_jobs")[0]["id"] == "job-old"
        state = db.query("SELECT active, previous FROM model_state")[0]
        assert (state["active"], state["previous"]) == ("v2-dpo", "v1-dpo")
        deployments = db.query("SELECT version, detail_json FROM deployments ORDER BY at")
        assert [d["version"] for d in deployments] == ["v1-dpo", "v2-dpo"]
        assert json.loads(deployments[1]["detail_json"]) == {"job_id": "job-old"}
        assert [r["run_id"] for r in db.query("SELECT run_id FROM eval_reports")] == ["tiny-abc"]
    finally:
        db.close()
    (registry / "active.json").write_text(json.dumps({"active": "v9-dpo"}))  # read once, never again
    db = open_db(settings)
    try:
        assert db.query("SELECT active FROM model_state")[0]["active"] == "v2-dpo"
        assert len(db.query("SELECT id FROM deployments")) == 2
    finally:
        db.close()


@pytest.mark.replicas
def test_postgres_is_migrated_by_the_command_and_a_stale_schema_refuses_to_start(pg_database, tmp_path):
    from agentstack.config import load_settings
    from agentstack.db import open_db
    from agentstack.storage.migrate import SchemaError

    settings = load_settings(data_dir=tmp_path / "data", database={"url": pg_database})
    with pytest.raises(SchemaError) as refused:
        open_db(settings)  # PostgreSQL: replicas never migrate on their own by default
    assert "agentstack db migrate" in refused.value.fix and "no agentstack schema" in refused.value.message
    env = {"AGENTSTACK_DATA_DIR": str(tmp_path / "data"), "AGENTSTACK_DATABASE__URL": pg_database}
    status = cli("db", "status", env=env)
    assert status.returncode == 1 and "agentstack db migrate" in status.stdout
    refused_serve = cli("serve", "--port", "0", env={**env, "AGENTSTACK_AUTH__SESSION_SECRET": "s" * 32})
    assert refused_serve.returncode == 2 and "run `agentstack db migrate` once" in refused_serve.stderr
    from agentstack.errors import ConfigError
    from server.app import create_app

    with pytest.raises(ConfigError, match="auth.session_secret is not set") as no_secret:
        create_app(settings)  # shared state without one session secret: refused before anything starts
    assert "AGENTSTACK_AUTH__SESSION_SECRET" in no_secret.value.fix
    first = cli("db", "migrate", "--json", env=env)
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout)["to"] == "0003_responses_grounding"
    assert "postgres@" in json.loads(first.stdout)["database"]
    again = cli("db", "migrate", env=env)
    assert again.returncode == 0 and "already at 0003_responses_grounding" in again.stdout
    open_db(settings).close()

    # a database one revision behind: the replica names the command
    import sqlalchemy as sa

    engine = sa.create_engine(pg_database)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE alembic_version SET version_num = '0001_baseline'"))
    engine.dispose()
    with pytest.raises(SchemaError, match="at revision 0001_baseline; this agentstack needs 0003_responses_grounding"):
        open_db(settings)


@pytest.mark.replicas
def test_concurrent_migrations_run_once(pg_database, tmp_path):
    from agentstack.config import load_settings
    from agentstack.db import open_db

    settings = load_settings(data_dir=tmp_path / "data", database={"url": pg_database, "migrate_on_start": True})
    errors, started = [], time.monotonic()

    def start():
        try:
            open_db(settings).close()
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    from tests.replicas.test_store_contract import concurrently

    concurrently(start, 4)
    assert not errors and time.monotonic() - started < 60


@pytest.mark.replicas
def test_an_sqlite_deployment_is_copied_into_postgres(settings, pg_database, tmp_path):
    from agentstack.audit import AuditLog
    from agentstack.config import load_settings
    from agentstack.db import open_db
    from agentstack.feedback.store import FeedbackStore
    from agentstack.history.store import ConversationStore
    from tests.replicas.test_store_contract import record

    old = open_db(settings)  # the embedded default, with some history
    cid = ConversationStore(old).create(key_id="app1", user_id="u1", mode="plain", index_name=None, title="t")
    record(old, "r1", conversation=cid, turn=0)
    FeedbackStore(old).vote(response_id="r1", key_id="app1", user_id="u1", rating="down", correction="better")
    for i in range(3):
        AuditLog(old).record(key_id="op1", action=f"a{i}")
    old.close()
    env = {"AGENTSTACK_DATA_DIR": str(tmp_path / "new"), "AGENTSTACK_DATABASE__URL": pg_database}
    done = cli("db", "migrate", "--from", f"sqlite:///{settings.db_path}", env=env)
    assert done.returncode == 0, done.stderr
    assert "conversations 1, responses 1, feedback 1, audit_log 3" in done.stdout
    again = cli("db", "migrate", "--from", f"sqlite:///{settings.db_path}", env=env)
    assert again.returncode == 1 and "already holds rows" in again.stderr  # never merged twice

    new = open_db(load_settings(data_dir=tmp_path / "new", database={"url": pg_database}))
    try:
        fb = FeedbackStore(new).voted()
        assert [(v.feedback.rating, v.feedback.correction, v.response.id) for v in fb] == [("down", "better", "r1")]
        assert ConversationStore(new).turns(cid)[0].id == "r1"
        assert AuditLog(new).record(key_id="op1", action="after") == 4  # the id sequence moved past the copy
    finally:
        new.close()

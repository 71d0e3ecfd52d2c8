"""The main database: how a process opens it, and the state carried over from files.

Every store (conversations and responses in ``history/``, ``feedback/``, the audit log, alignment
jobs, the model version served, deployments, eval report metadata) reads and writes it through
:class:`~agentstack.storage.database.Database`: SQLite at ``data_dir/agentstack.db`` by default,
PostgreSQL when ``database.url`` names one. The tables are in ``storage/schema.py`` and their
history in Alembic migrations (``storage/migrations/``).

:data:`LEGACY_MIGRATIONS` is the pre-Alembic history (the ``_migrations`` table) of databases made
by earlier releases; ``storage/migrate.py`` completes such a database with it and stamps it at the
Alembic baseline. Never edit it.

:func:`import_file_state` moves what earlier releases kept in files into the database, once each:
``registry/active.json`` (the served version), ``registry/deployments.jsonl`` and the eval reports'
metadata. The files are left in place (read by nothing any more).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from agentstack.config import Settings
from agentstack.storage import schema
from agentstack.storage.database import Database
from agentstack.storage.sqlite import Migration, sql

log = logging.getLogger(__name__)

LEGACY_MIGRATIONS: list[Migration] = [
    Migration("conversations_and_responses", sql(
        """CREATE TABLE conversations (
            id TEXT PRIMARY KEY,
            key_id TEXT NOT NULL,
            user_id TEXT NOT NULL,
            title TEXT,
            mode TEXT NOT NULL DEFAULT 'plain',
            index_name TEXT,
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL)""",
        "CREATE INDEX conversations_owner ON conversations (key_id, user_id, updated_at)",
        """CREATE TABLE responses (
            id TEXT PRIMARY KEY,
            conversation_id TEXT REFERENCES conversations(id) ON DELETE CASCADE,
            parent_id TEXT,
            turn INTEGER,
            key_id TEXT NOT NULL,
            user_id TEXT NOT NULL,
            endpoint TEXT NOT NULL,
            mode TEXT NOT NULL DEFAULT 'plain',
            model TEXT NOT NULL,
            model_version TEXT NOT NULL,
            messages_json TEXT NOT NULL,
            rendered_prompt TEXT,
            prompt_template_version TEXT,
            params_json TEXT NOT NULL,
            answer TEXT NOT NULL,
            finish_reason TEXT,
            sources_json TEXT,
            trace_json TEXT,
            prompt_tokens INTEGER,
            completion_tokens INTEGER,
            latency_ms REAL,
            created_at REAL NOT NULL)""",
        "CREATE INDEX responses_conversation ON responses (conversation_id, turn)",
        "CREATE INDEX responses_owner ON responses (key_id, user_id, created_at)",
        "CREATE INDEX responses_parent ON responses (parent_id)",
    )),
    Migration("audit_log", sql(
        """CREATE TABLE audit_log (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            at REAL NOT NULL,
            key_id TEXT NOT NULL,
            user_id TEXT,
            action TEXT NOT NULL,
            target TEXT,
            detail_json TEXT,
            outcome TEXT NOT NULL)""",
        "CREATE INDEX audit_at ON audit_log (at)",
    )),
    Migration("feedback", sql(
        """CREATE TABLE feedback (
            id TEXT PRIMARY KEY,
            response_id TEXT NOT NULL REFERENCES responses(id) ON DELETE CASCADE,
            key_id TEXT NOT NULL,
            user_id TEXT NOT NULL,
            rating TEXT NOT NULL CHECK (rating IN ('up', 'down')),
            comment TEXT,
            correction TEXT,
            model_version TEXT NOT NULL,
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL,
            UNIQUE (response_id, key_id, user_id))""",
        "CREATE INDEX feedback_time ON feedback (updated_at)",
        "CREATE INDEX feedback_owner ON feedback (key_id, user_id)",
        "CREATE INDEX feedback_version ON feedback (model_version, updated_at)",
    )),
    Migration("alignment_jobs", sql(
        """CREATE TABLE alignment_jobs (
            id TEXT PRIMARY KEY,
            method TEXT NOT NULL,
            status TEXT NOT NULL,
            stage TEXT,
            spec_json TEXT NOT NULL,
            created_by TEXT NOT NULL,
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL,
            started_at REAL,
            finished_at REAL,
            pid INTEGER,
            current_version TEXT,
            version TEXT,
            error TEXT,
            data_json TEXT,
            metrics_json TEXT,
            gate_json TEXT,
            promotion_json TEXT)""",
        "CREATE INDEX alignment_jobs_created ON alignment_jobs (created_at)",
        "CREATE INDEX alignment_jobs_status ON alignment_jobs (status)",
    )),
]



def migrates_on_open(settings: Settings) -> bool:
    flag = settings.database.migrate_on_start
    return flag if flag is not None else settings.database_url.startswith("sqlite")


def open_db(settings: Settings, *, migrate: bool | None = None) -> Database:
    """The database, its schema current: migrated now where ``database.migrate_on_start`` says so
    (SQLite by default), else checked (:class:`~agentstack.storage.migrate.SchemaError` names the
    command to run). ``migrate`` overrides the setting."""
    from agentstack.storage import migrate as migrations

    db = Database(settings.database_url, pool_size=settings.database.pool_size)
    try:
        if migrates_on_open(settings) if migrate is None else migrate:
            migrations.upgrade(db, legacy=LEGACY_MIGRATIONS)
            import_file_state(db, settings)
        else:
            migrations.ensure_current(db)
    except BaseException:
        db.close()
        raise
    return db


def _imported(conn: sa.Connection, name: str) -> bool:
    return conn.execute(sa.select(schema.state_imports.c.name).where(schema.state_imports.c.name == name)
                        ).first() is not None


def _mark(conn: sa.Connection, name: str, detail: dict[str, Any]) -> None:
    conn.execute(schema.state_imports.insert().values(name=name, at=time.time(), detail_json=json.dumps(detail)))


def import_file_state(db: Database, settings: Settings) -> dict[str, Any]:
    """Carry file-based state of earlier releases into the database, each file once. Returns what
    was imported now (empty when everything was done before)."""
    from agentstack.storage.files import read_json

    done: dict[str, Any] = {}
    registry = settings.registry_path
    with db.tx() as conn:
        if not _imported(conn, "registry/active.json"):
            state = read_json(registry / "active.json", None)
            alias = settings.engine.served_model_name
            if isinstance(state, dict) and state.get("active"):
                exists = conn.execute(sa.select(schema.model_state.c.alias).where(
                    schema.model_state.c.alias == alias)).first()
                if exists is None:
                    conn.execute(schema.model_state.insert().values(
                        alias=alias, active=state["active"], previous=state.get("previous"), generation=1,
                        updated_at=time.time()))
                    done["active"] = state["active"]
            _mark(conn, "registry/active.json", {"found": state is not None})
        if not _imported(conn, "registry/deployments.jsonl"):
            rows = _read_jsonl(registry / "deployments.jsonl")
            for entry in rows:
                conn.execute(schema.deployments.insert().values(**deployment_row(entry)))
            if rows:
                done["deployments"] = len(rows)
            _mark(conn, "registry/deployments.jsonl", {"rows": len(rows)})
        if not _imported(conn, "eval/*/report.json"):
            from agentstack.evaluation.reports import report_rows

            rows = report_rows(settings.eval_path)
            for row in rows:
                conn.execute(schema.eval_reports.insert().values(**row))
            if rows:
                done["eval_reports"] = len(rows)
            _mark(conn, "eval/*/report.json", {"rows": len(rows)})
    if done:
        log.info("carried file state into the database: %s", done)
    return done


def deployment_row(entry: dict[str, Any]) -> dict[str, Any]:
    """A ``deployments`` row from a deployment entry (``action``, ``version``, ``previous``, ``key_id``, extras)."""
    entry = dict(entry)
    row = {"at": float(entry.pop("at", None) or time.time()), "action": str(entry.pop("action", "promote")),
           "version": str(entry.pop("version", "")), "previous": entry.pop("previous", None),
           "key_id": entry.pop("key_id", None)}
    row["detail_json"] = json.dumps(entry, sort_keys=True, default=str) if entry else None
    return row


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    out = []
    for line in path.read_text("utf-8").splitlines():
        try:
            item = json.loads(line)
        except ValueError:
            continue  # a torn last line from a crash
        if isinstance(item, dict):
            out.append(item)
    return out

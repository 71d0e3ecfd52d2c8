"""The main database, ``data_dir/agentstack.db``: its ordered migrations and how to open it.

Tables: conversations and responses (``history/``), feedback (``feedback/``), the audit log, and
alignment jobs. Each subsystem owns its tables' queries; the schema steps live here, in order,
because their order is the database's history. Append new steps; never edit a released one.
"""

from __future__ import annotations

from agentstack.config import Settings
from agentstack.storage.sqlite import Database, Migration, sql

MIGRATIONS: list[Migration] = [
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
    # The groundedness verifier's per-claim scores and decision (agentstack/grounding), as JSON.
    Migration("responses_grounding", sql("ALTER TABLE responses ADD COLUMN grounding_json TEXT")),
]


def open_db(settings: Settings) -> Database:
    return Database(settings.db_path, MIGRATIONS)

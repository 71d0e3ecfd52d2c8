"""The main database's tables as SQLAlchemy Core objects: what the stores query.

This is the schema at the newest migration (``migrations/versions/``); the migrations are its
history and create the same tables on SQLite and PostgreSQL. Timestamps are Unix seconds (float),
JSON is stored as text (the ``*_json`` columns), so both backends hold identical values.

* conversations, responses        every served answer (``history/``)
* feedback                        votes on responses (``feedback/``)
* audit_log                       operator actions (``audit.py``)
* alignment_jobs                  training jobs; at most one active (a partial unique index), the
                                  worker's liveness is its ``heartbeat_at``
* model_state, deployments        the served version and every promotion and rollback (``alignment/deploy.py``)
* eval_reports                    metadata of stored eval reports (``evaluation/reports.py``)
* replicas                        the API processes sharing this database, with a heartbeat each
* leases                          named locks with an expiry (one replica runs the job monitor)
* state_imports                   which file-based state (active.json, ...) was carried over
"""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()
Time = sa.Float(precision=53)  # DOUBLE PRECISION on Postgres, REAL on SQLite
ACTIVE_JOB = ("queued", "running", "cancelling")

conversations = sa.Table(
    "conversations", metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("key_id", sa.Text, nullable=False),
    sa.Column("user_id", sa.Text, nullable=False),
    sa.Column("title", sa.Text),
    sa.Column("mode", sa.Text, nullable=False, server_default="plain"),
    sa.Column("index_name", sa.Text),
    sa.Column("created_at", Time, nullable=False),
    sa.Column("updated_at", Time, nullable=False),
    sa.Index("conversations_owner", "key_id", "user_id", "updated_at"),
)

responses = sa.Table(
    "responses", metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("conversation_id", sa.Text, sa.ForeignKey("conversations.id", ondelete="CASCADE")),
    sa.Column("parent_id", sa.Text),
    sa.Column("turn", sa.Integer),
    sa.Column("key_id", sa.Text, nullable=False),
    sa.Column("user_id", sa.Text, nullable=False),
    sa.Column("endpoint", sa.Text, nullable=False),
    sa.Column("mode", sa.Text, nullable=False, server_default="plain"),
    sa.Column("model", sa.Text, nullable=False),
    sa.Column("model_version", sa.Text, nullable=False),
    sa.Column("messages_json", sa.Text, nullable=False),
    sa.Column("rendered_prompt", sa.Text),
    sa.Column("prompt_template_version", sa.Text),
    sa.Column("params_json", sa.Text, nullable=False),
    sa.Column("answer", sa.Text, nullable=False),
    sa.Column("finish_reason", sa.Text),
    sa.Column("sources_json", sa.Text),
    sa.Column("trace_json", sa.Text),
    sa.Column("prompt_tokens", sa.Integer),
    sa.Column("completion_tokens", sa.Integer),
    sa.Column("latency_ms", sa.Float(precision=53)),
    sa.Column("created_at", Time, nullable=False),
    sa.Column("grounding_json", sa.Text),  # the groundedness verifier's verdict (agentstack/grounding)
    sa.Index("responses_conversation", "conversation_id", "turn"),
    sa.Index("responses_owner", "key_id", "user_id", "created_at"),
    sa.Index("responses_parent", "parent_id"),
)

audit_log = sa.Table(
    "audit_log", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("at", Time, nullable=False),
    sa.Column("key_id", sa.Text, nullable=False),
    sa.Column("user_id", sa.Text),
    sa.Column("action", sa.Text, nullable=False),
    sa.Column("target", sa.Text),
    sa.Column("detail_json", sa.Text),
    sa.Column("outcome", sa.Text, nullable=False),
    sa.Index("audit_at", "at"),
    sqlite_autoincrement=True,
)

feedback = sa.Table(
    "feedback", metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("response_id", sa.Text, sa.ForeignKey("responses.id", ondelete="CASCADE"), nullable=False),
    sa.Column("key_id", sa.Text, nullable=False),
    sa.Column("user_id", sa.Text, nullable=False),
    sa.Column("rating", sa.Text, sa.CheckConstraint("rating IN ('up', 'down')"), nullable=False),
    sa.Column("comment", sa.Text),
    sa.Column("correction", sa.Text),
    sa.Column("model_version", sa.Text, nullable=False),
    sa.Column("created_at", Time, nullable=False),
    sa.Column("updated_at", Time, nullable=False),
    sa.UniqueConstraint("response_id", "key_id", "user_id"),
    sa.Index("feedback_time", "updated_at"),
    sa.Index("feedback_owner", "key_id", "user_id"),
    sa.Index("feedback_version", "model_version", "updated_at"),
)

alignment_jobs = sa.Table(
    "alignment_jobs", metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("method", sa.Text, nullable=False),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("stage", sa.Text),
    sa.Column("spec_json", sa.Text, nullable=False),
    sa.Column("created_by", sa.Text, nullable=False),
    sa.Column("created_at", Time, nullable=False),
    sa.Column("updated_at", Time, nullable=False),
    sa.Column("started_at", Time),
    sa.Column("finished_at", Time),
    sa.Column("pid", sa.Integer),
    sa.Column("current_version", sa.Text),
    sa.Column("version", sa.Text),
    sa.Column("error", sa.Text),
    sa.Column("data_json", sa.Text),
    sa.Column("metrics_json", sa.Text),
    sa.Column("gate_json", sa.Text),
    sa.Column("promotion_json", sa.Text),
    # added by 0002_shared_state
    sa.Column("lane", sa.Text, nullable=False, server_default="alignment"),
    sa.Column("host", sa.Text),
    sa.Column("replica_id", sa.Text),
    sa.Column("heartbeat_at", Time),
    sa.Index("alignment_jobs_created", "created_at"),
    sa.Index("alignment_jobs_status", "status"),
    sa.Index("alignment_jobs_one_active", "lane", unique=True,
             sqlite_where=sa.text("status IN ('queued', 'running', 'cancelling')"),
             postgresql_where=sa.text("status IN ('queued', 'running', 'cancelling')")),
)

model_state = sa.Table(
    "model_state", metadata,
    sa.Column("alias", sa.Text, primary_key=True),
    sa.Column("active", sa.Text),
    sa.Column("previous", sa.Text),
    sa.Column("preload", sa.Text),
    sa.Column("generation", sa.Integer, nullable=False, server_default="0"),
    sa.Column("updated_at", Time, nullable=False),
)

deployments = sa.Table(
    "deployments", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("at", Time, nullable=False),
    sa.Column("action", sa.Text, nullable=False),
    sa.Column("version", sa.Text, nullable=False),
    sa.Column("previous", sa.Text),
    sa.Column("key_id", sa.Text),
    sa.Column("detail_json", sa.Text),
    sa.Index("deployments_at", "at"),
    sqlite_autoincrement=True,
)

eval_reports = sa.Table(
    "eval_reports", metadata,
    sa.Column("run_id", sa.Text, primary_key=True),
    sa.Column("suite", sa.Text),
    sa.Column("created_at", sa.Text),
    sa.Column("finished_at", sa.Text),
    sa.Column("summary_json", sa.Text, nullable=False),
    sa.Column("run_dir", sa.Text, nullable=False),
    sa.Column("recorded_at", Time, nullable=False),
    sa.Index("eval_reports_finished", "finished_at"),
)

replicas = sa.Table(
    "replicas", metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("host", sa.Text, nullable=False),
    sa.Column("pid", sa.Integer, nullable=False),
    sa.Column("started_at", Time, nullable=False),
    sa.Column("heartbeat_at", Time, nullable=False),
    sa.Column("active", sa.Text),
    sa.Column("loaded_json", sa.Text),
)

leases = sa.Table(
    "leases", metadata,
    sa.Column("name", sa.Text, primary_key=True),
    sa.Column("holder", sa.Text, nullable=False),
    sa.Column("expires_at", Time, nullable=False),
    sa.Column("acquired_at", Time, nullable=False),
)

state_imports = sa.Table(
    "state_imports", metadata,
    sa.Column("name", sa.Text, primary_key=True),
    sa.Column("at", Time, nullable=False),
    sa.Column("detail_json", sa.Text),
)

"""Baseline: the four tables of the pre-Alembic ``_migrations`` history (conversations and
responses, audit log, feedback, alignment jobs). A database made by those migrations is stamped at
this revision instead of running it (``agentstack/storage/migrate.py``).

Revision ID: 0001_baseline
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001_baseline"
down_revision = None
branch_labels = None
depends_on = None

T = sa.Float(precision=53)


def upgrade() -> None:
    op.create_table(
        "conversations",
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("key_id", sa.Text, nullable=False),
        sa.Column("user_id", sa.Text, nullable=False),
        sa.Column("title", sa.Text),
        sa.Column("mode", sa.Text, nullable=False, server_default="plain"),
        sa.Column("index_name", sa.Text),
        sa.Column("created_at", T, nullable=False),
        sa.Column("updated_at", T, nullable=False))
    op.create_index("conversations_owner", "conversations", ["key_id", "user_id", "updated_at"])
    op.create_table(
        "responses",
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
        sa.Column("created_at", T, nullable=False))
    op.create_index("responses_conversation", "responses", ["conversation_id", "turn"])
    op.create_index("responses_owner", "responses", ["key_id", "user_id", "created_at"])
    op.create_index("responses_parent", "responses", ["parent_id"])
    op.create_table(
        "audit_log",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("at", T, nullable=False),
        sa.Column("key_id", sa.Text, nullable=False),
        sa.Column("user_id", sa.Text),
        sa.Column("action", sa.Text, nullable=False),
        sa.Column("target", sa.Text),
        sa.Column("detail_json", sa.Text),
        sa.Column("outcome", sa.Text, nullable=False),
        sqlite_autoincrement=True)
    op.create_index("audit_at", "audit_log", ["at"])
    op.create_table(
        "feedback",
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("response_id", sa.Text, sa.ForeignKey("responses.id", ondelete="CASCADE"), nullable=False),
        sa.Column("key_id", sa.Text, nullable=False),
        sa.Column("user_id", sa.Text, nullable=False),
        sa.Column("rating", sa.Text, sa.CheckConstraint("rating IN ('up', 'down')"), nullable=False),
        sa.Column("comment", sa.Text),
        sa.Column("correction", sa.Text),
        sa.Column("model_version", sa.Text, nullable=False),
        sa.Column("created_at", T, nullable=False),
        sa.Column("updated_at", T, nullable=False),
        sa.UniqueConstraint("response_id", "key_id", "user_id"))
    op.create_index("feedback_time", "feedback", ["updated_at"])
    op.create_index("feedback_owner", "feedback", ["key_id", "user_id"])
    op.create_index("feedback_version", "feedback", ["model_version", "updated_at"])
    op.create_table(
        "alignment_jobs",
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("method", sa.Text, nullable=False),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("stage", sa.Text),
        sa.Column("spec_json", sa.Text, nullable=False),
        sa.Column("created_by", sa.Text, nullable=False),
        sa.Column("created_at", T, nullable=False),
        sa.Column("updated_at", T, nullable=False),
        sa.Column("started_at", T),
        sa.Column("finished_at", T),
        sa.Column("pid", sa.Integer),
        sa.Column("current_version", sa.Text),
        sa.Column("version", sa.Text),
        sa.Column("error", sa.Text),
        sa.Column("data_json", sa.Text),
        sa.Column("metrics_json", sa.Text),
        sa.Column("gate_json", sa.Text),
        sa.Column("promotion_json", sa.Text))
    op.create_index("alignment_jobs_created", "alignment_jobs", ["created_at"])
    op.create_index("alignment_jobs_status", "alignment_jobs", ["status"])


def downgrade() -> None:
    raise NotImplementedError("agentstack migrations go forward only; restore a backup to go back")

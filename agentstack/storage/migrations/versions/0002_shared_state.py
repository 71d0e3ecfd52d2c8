"""Shared state for several replicas: the served version and deployments (were registry/active.json
and deployments.jsonl), eval report metadata, replicas with heartbeats, leases, and on
alignment_jobs a worker heartbeat plus a partial unique index allowing one active job.

Revision ID: 0002_shared_state
Revises: 0001_baseline
"""

from __future__ import annotations

import time

import sqlalchemy as sa
from alembic import op

revision = "0002_shared_state"
down_revision = "0001_baseline"
branch_labels = None
depends_on = None

T = sa.Float(precision=53)
ACTIVE = "status IN ('queued', 'running', 'cancelling')"


def upgrade() -> None:
    with op.batch_alter_table("alignment_jobs", recreate="never") as batch:
        batch.add_column(sa.Column("lane", sa.Text, nullable=False, server_default="alignment"))
        batch.add_column(sa.Column("host", sa.Text))
        batch.add_column(sa.Column("replica_id", sa.Text))
        batch.add_column(sa.Column("heartbeat_at", T))
    # Two active jobs could exist from the old read-then-insert race; keep the newest so the index holds.
    jobs = sa.table("alignment_jobs", sa.column("id"), sa.column("status"), sa.column("created_at"),
                    sa.column("error"), sa.column("finished_at"))
    conn = op.get_bind()
    active = conn.execute(sa.select(jobs.c.id).where(sa.text(ACTIVE)).order_by(jobs.c.created_at.desc())).all()
    for (job_id,) in active[1:]:
        conn.execute(jobs.update().where(jobs.c.id == job_id).values(
            status="failed", finished_at=time.time(), error="superseded: a newer job was active when the "
            "database was migrated (one active job at a time)"))
    op.create_index("alignment_jobs_one_active", "alignment_jobs", ["lane"], unique=True,
                    sqlite_where=sa.text(ACTIVE), postgresql_where=sa.text(ACTIVE))
    op.create_table(
        "model_state",
        sa.Column("alias", sa.Text, primary_key=True),
        sa.Column("active", sa.Text),
        sa.Column("previous", sa.Text),
        sa.Column("preload", sa.Text),
        sa.Column("generation", sa.Integer, nullable=False, server_default="0"),
        sa.Column("updated_at", T, nullable=False))
    op.create_table(
        "deployments",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("at", T, nullable=False),
        sa.Column("action", sa.Text, nullable=False),
        sa.Column("version", sa.Text, nullable=False),
        sa.Column("previous", sa.Text),
        sa.Column("key_id", sa.Text),
        sa.Column("detail_json", sa.Text),
        sqlite_autoincrement=True)
    op.create_index("deployments_at", "deployments", ["at"])
    op.create_table(
        "eval_reports",
        sa.Column("run_id", sa.Text, primary_key=True),
        sa.Column("suite", sa.Text),
        sa.Column("created_at", sa.Text),
        sa.Column("finished_at", sa.Text),
        sa.Column("summary_json", sa.Text, nullable=False),
        sa.Column("run_dir", sa.Text, nullable=False),
        sa.Column("recorded_at", T, nullable=False))
    op.create_index("eval_reports_finished", "eval_reports", ["finished_at"])
    op.create_table(
        "replicas",
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("host", sa.Text, nullable=False),
        sa.Column("pid", sa.Integer, nullable=False),
        sa.Column("started_at", T, nullable=False),
        sa.Column("heartbeat_at", T, nullable=False),
        sa.Column("active", sa.Text),
        sa.Column("loaded_json", sa.Text))
    op.create_table(
        "leases",
        sa.Column("name", sa.Text, primary_key=True),
        sa.Column("holder", sa.Text, nullable=False),
        sa.Column("expires_at", T, nullable=False),
        sa.Column("acquired_at", T, nullable=False))
    op.create_table(
        "state_imports",
        sa.Column("name", sa.Text, primary_key=True),
        sa.Column("at", T, nullable=False),
        sa.Column("detail_json", sa.Text))


def downgrade() -> None:
    raise NotImplementedError("agentstack migrations go forward only; restore a backup to go back")

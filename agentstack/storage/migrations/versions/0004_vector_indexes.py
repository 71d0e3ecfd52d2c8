"""The pgvector index backend's catalog: one row per index (its published generation, manifest and
spec), the configuration of each generation, and the ingest log with its PII counts. Each index's
documents and chunks live in tables of their own, made when the index is created
(``agentstack/index/pgvector/``). On PostgreSQL the ``vector`` extension is created here when the
server has it and the migrating role may (else the first pgvector index says how).

Revision ID: 0004_vector_indexes
Revises: 0003_responses_grounding
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_vector_indexes"
down_revision = "0003_responses_grounding"
branch_labels = None
depends_on = None

T = sa.Float(precision=53)


def upgrade() -> None:
    op.create_table(
        "vector_indexes",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("name", sa.Text, nullable=False, unique=True),
        sa.Column("epoch", sa.Integer, nullable=False),
        sa.Column("generation", sa.Integer, nullable=False),
        sa.Column("manifest_json", sa.Text, nullable=False),
        sa.Column("spec_json", sa.Text, nullable=False),
        sa.Column("created_at", T, nullable=False),
        sa.Column("updated_at", T, nullable=False),
        sqlite_autoincrement=True)
    op.create_table(
        "vector_index_generations",
        sa.Column("index_id", sa.Integer, sa.ForeignKey("vector_indexes.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("gen", sa.Integer, primary_key=True),
        sa.Column("created_at", T, nullable=False),
        sa.Column("config_json", sa.Text, nullable=False))
    op.create_table(
        "vector_index_ingests",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("index_id", sa.Integer, sa.ForeignKey("vector_indexes.id", ondelete="CASCADE"), nullable=False),
        sa.Column("gen", sa.Integer, nullable=False),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("at", T, nullable=False),
        sa.Column("added", sa.Integer, nullable=False),
        sa.Column("updated", sa.Integer, nullable=False),
        sa.Column("unchanged", sa.Integer, nullable=False),
        sa.Column("deleted", sa.Integer, nullable=False),
        sa.Column("failed", sa.Integer, nullable=False),
        sa.Column("chunks", sa.Integer, nullable=False),
        sa.Column("failures_json", sa.Text, nullable=False),
        sqlite_autoincrement=True)
    op.create_index("vector_index_ingests_index", "vector_index_ingests", ["index_id", "gen"])
    op.create_table(
        "vector_index_scrub_counts",
        sa.Column("ingest_id", sa.Integer, sa.ForeignKey("vector_index_ingests.id", ondelete="CASCADE"),
                  primary_key=True),
        sa.Column("doc_id", sa.Text, primary_key=True),
        sa.Column("entity", sa.Text, primary_key=True),
        sa.Column("count", sa.Integer, nullable=False))
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        available = bind.execute(sa.text("SELECT 1 FROM pg_available_extensions WHERE name = 'vector'")).first()
        if available is not None:
            try:
                with bind.begin_nested():  # a role that may not create it must not abort the migration
                    bind.execute(sa.text("CREATE EXTENSION IF NOT EXISTS vector"))
            except sa.exc.DBAPIError:
                pass


def downgrade() -> None:
    for table in ("vector_index_scrub_counts", "vector_index_ingests", "vector_index_generations",
                  "vector_indexes"):
        op.drop_table(table)

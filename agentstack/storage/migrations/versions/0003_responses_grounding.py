"""The groundedness verifier's verdict on every response (agentstack/grounding): per-claim scores
and the decision, as JSON.

Revision ID: 0003_responses_grounding
Revises: 0002_shared_state
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003_responses_grounding"
down_revision = "0002_shared_state"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("responses", recreate="never") as batch:
        batch.add_column(sa.Column("grounding_json", sa.Text))


def downgrade() -> None:
    raise NotImplementedError("agentstack migrations go forward only; restore a backup to go back")

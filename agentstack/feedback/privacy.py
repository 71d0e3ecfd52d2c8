"""Deleting an end user's data, and the retention purge.

Training sets are built fresh from the database for every round (``alignment/preferences.py``),
and a round's scrubbed data files are removed when it ends unless ``alignment.keep_datasets`` is
on. So deleting the rows here removes a user from every *future* training set. Versions already
trained keep what they learned; their metadata records the data window so an operator can retrain
without them.

This module knows nothing about HTTP; it deletes rows and returns counts.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import sqlalchemy as sa

from agentstack.storage.database import Database
from agentstack.storage.schema import conversations as C
from agentstack.storage.schema import feedback as F
from agentstack.storage.schema import responses as R

log = logging.getLogger(__name__)


def delete_user_data(db: Database, user_id: str, *, key_id: str | None = None) -> dict[str, int]:
    """Delete the conversations, responses and feedback of ``user_id`` (the ``X-User-Id`` an app
    sent), under every key or only ``key_id``. Returns the number of rows deleted per table."""
    def owned(table: sa.Table) -> sa.ColumnElement[bool]:
        return sa.and_(table.c.user_id == user_id, *([table.c.key_id == key_id] if key_id else []))

    with db.tx() as conn:
        feedback = conn.execute(F.delete().where(owned(F))).rowcount
        # votes others cast on this user's responses go too (the FK cascades, counted here first)
        feedback += conn.execute(F.delete().where(F.c.response_id.in_(sa.select(R.c.id).where(owned(R))))).rowcount
        responses = conn.execute(R.delete().where(owned(R))).rowcount
        conversations = conn.execute(C.delete().where(owned(C))).rowcount
    counts = {"conversations": conversations, "responses": responses, "feedback": feedback}
    log.info("deleted user data: %s", counts)
    return counts


def purge_expired(db: Database, retention_days: int | None, *, now: float | None = None) -> dict[str, Any]:
    """Delete conversations, responses and feedback older than ``retention_days`` (feedback by the
    time it was last cast, responses by creation, conversations by their last turn). No-op when
    retention is unset."""
    if not retention_days:
        return {"cutoff": None, "conversations": 0, "responses": 0, "feedback": 0}
    cutoff = (now if now is not None else time.time()) - retention_days * 86400
    with db.tx() as conn:
        feedback = conn.execute(F.delete().where(F.c.updated_at < cutoff)).rowcount
        feedback += conn.execute(F.delete().where(F.c.response_id.in_(
            sa.select(R.c.id).where(R.c.created_at < cutoff)))).rowcount
        conversations = conn.execute(C.delete().where(C.c.updated_at < cutoff)).rowcount
        responses = conn.execute(R.delete().where(R.c.created_at < cutoff)).rowcount
    counts = {"cutoff": cutoff, "conversations": conversations, "responses": responses, "feedback": feedback}
    if conversations or responses or feedback:
        log.info("retention purge (%s days): %s", retention_days, counts)
    return counts

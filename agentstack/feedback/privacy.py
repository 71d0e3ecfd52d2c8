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

from agentstack.storage.sqlite import Database

log = logging.getLogger(__name__)


def delete_user_data(db: Database, user_id: str, *, key_id: str | None = None) -> dict[str, int]:
    """Delete the conversations, responses and feedback of ``user_id`` (the ``X-User-Id`` an app
    sent), under every key or only ``key_id``. Returns the number of rows deleted per table."""
    scope, params = ("AND key_id = ?", (user_id, key_id)) if key_id else ("", (user_id,))
    with db.tx() as conn:
        feedback = conn.execute(f"DELETE FROM feedback WHERE user_id = ? {scope}", params).rowcount
        # votes others cast on this user's responses go too (the FK cascades, counted here first)
        feedback += conn.execute(
            f"DELETE FROM feedback WHERE response_id IN (SELECT id FROM responses WHERE user_id = ? {scope})",
            params).rowcount
        responses = conn.execute(f"DELETE FROM responses WHERE user_id = ? {scope}", params).rowcount
        conversations = conn.execute(f"DELETE FROM conversations WHERE user_id = ? {scope}", params).rowcount
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
        feedback = conn.execute("DELETE FROM feedback WHERE updated_at < ?", (cutoff,)).rowcount
        feedback += conn.execute("DELETE FROM feedback WHERE response_id IN (SELECT id FROM responses WHERE "
                                 "created_at < ?)", (cutoff,)).rowcount
        conversations = conn.execute("DELETE FROM conversations WHERE updated_at < ?", (cutoff,)).rowcount
        responses = conn.execute("DELETE FROM responses WHERE created_at < ?", (cutoff,)).rowcount
    counts = {"cutoff": cutoff, "conversations": conversations, "responses": responses, "feedback": feedback}
    if conversations or responses or feedback:
        log.info("retention purge (%s days): %s", retention_days, counts)
    return counts

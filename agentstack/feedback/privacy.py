"""Deleting an end user's data, the retention purges, and the pseudonyms that name users in the
audit log.

Training sets are built fresh from the database for every round (``alignment/preferences.py``),
and a round's scrubbed data files are removed when it ends unless ``alignment.keep_datasets`` is
on. So deleting the rows here removes a user from every *future* training set. Versions already
trained keep what they learned; their metadata records the data window so an operator can retrain
without them.

Two purges: ``purge_expired`` (``privacy.retention_days``, unset by default) deletes everything
older than the cutoff, rated or not; ``purge_unrated_chat`` (``privacy.chat_retention_days``, 30
days by default) deletes conversations and responses that no one rated, once their conversation
has been idle that long. Rated responses are training data and follow the first.

A deleted user is named in the audit log by ``pseudonym``: a keyed HMAC-SHA256 of the user id,
so the log cannot be reversed by hashing guessable ids. The key is ``privacy.pseudonym_key``,
which every replica should share; unset, a random key is created once in
``<data_dir>/pseudonym.key`` (mode 0600) and a warning says that replicas with other data dirs
will name the same user differently.

This module knows nothing about HTTP; it deletes rows and returns counts.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
import tempfile
import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from agentstack.storage.database import Database
from agentstack.storage.schema import conversations as C
from agentstack.storage.schema import feedback as F
from agentstack.storage.schema import responses as R

log = logging.getLogger(__name__)
KEY_FILE = "pseudonym.key"


def pseudonym_key(settings: Any) -> bytes:
    """The HMAC key for pseudonyms: ``privacy.pseudonym_key``, else the data dir's own key file
    (created on first use, readable by the owner only)."""
    configured = settings.privacy.pseudonym_key
    if configured is not None:
        return configured.get_secret_value().encode()
    path = Path(settings.data_dir) / KEY_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    # Written whole to a private temporary file, then linked into place: the link fails if another
    # process made the key first (then its key is used), and no reader ever sees a half-written or
    # empty file, even after a crash.
    fd, tmp = tempfile.mkstemp(prefix=".pseudonym.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="ascii") as f:
            f.write(secrets.token_hex(32) + "\n")
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
    finally:
        os.unlink(tmp)
    key = path.read_text("ascii").strip()
    log.warning("privacy.pseudonym_key is unset: audit-log pseudonyms use the random key in %s; replicas with "
                "other data dirs name the same user differently. Set privacy.pseudonym_key (the same on every "
                "replica) to make them agree.", path)
    if len(key) < 32:
        raise ValueError(f"{path} holds no usable key; delete it to have a new one made")
    return key.encode()


def pseudonym(user_id: str, key: bytes) -> str:
    """How the audit log names an end user: a keyed HMAC, irreversible without the key."""
    return "hmac:" + hmac.new(key, b"agentstack user\x00" + user_id.encode(), hashlib.sha256).hexdigest()[:32]


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


def purge_unrated_chat(db: Database, chat_retention_days: int | None, *, now: float | None = None) -> dict[str, Any]:
    """Delete responses no one rated whose conversation (or, outside a conversation, whose own
    creation) is older than ``chat_retention_days``, then conversations left empty. Rated
    responses stay (see ``purge_expired``). No-op when unset."""
    if not chat_retention_days:
        return {"cutoff": None, "conversations": 0, "responses": 0}
    cutoff = (now if now is not None else time.time()) - chat_retention_days * 86400
    rated = sa.exists().where(F.c.response_id == R.c.id)
    idle = sa.select(C.c.id).where(C.c.updated_at < cutoff)
    with db.tx() as conn:
        responses = conn.execute(R.delete().where(
            R.c.created_at < cutoff, ~rated, sa.or_(R.c.conversation_id.is_(None), R.c.conversation_id.in_(idle)))
        ).rowcount
        conversations = conn.execute(C.delete().where(
            C.c.updated_at < cutoff, ~sa.exists().where(R.c.conversation_id == C.c.id))).rowcount
    counts = {"cutoff": cutoff, "conversations": conversations, "responses": responses}
    if conversations or responses:
        log.info("chat retention purge (%s days): %s", chat_retention_days, counts)
    return counts

"""Thumbs on stored responses: one vote per end user per response, voting again updates it.

A vote is linked to the :class:`~agentstack.history.ResponseRecord` it rates (rendered prompt,
sources, answer, model version), so the preference builder can rebuild exactly what the model saw.
Comment and correction are kept as the user wrote them, like the conversation itself; they are
PII-scrubbed on their way *out* (training data, exports: see ``scrub.py``), never trained on raw.

This module knows nothing about HTTP, scrubbing or training; it reads and writes rows of the
``feedback`` table (migration in ``agentstack/db.py``).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any, Literal

from agentstack.errors import InvalidRequestError, NotFoundError
from agentstack.history.store import ResponseRecord, ResponseStore, new_id
import sqlalchemy as sa

from agentstack.storage.database import Database
from agentstack.storage.schema import feedback as F
from agentstack.storage.schema import responses as R

Rating = Literal["up", "down"]
RATINGS = ("up", "down")
MAX_TEXT = 8000


@dataclass
class Feedback:
    id: str
    response_id: str
    key_id: str
    user_id: str
    rating: str
    model_version: str
    created_at: float
    updated_at: float
    comment: str | None = None
    correction: str | None = None

    def public(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Voted:
    """A vote together with the response it rates (what the builder and the exporter read)."""

    feedback: Feedback
    response: ResponseRecord


def _clean(text: str | None, field: str) -> str | None:
    if text is None:
        return None
    text = text.strip()
    if len(text) > MAX_TEXT:
        raise InvalidRequestError(f"{field} is {len(text)} characters; the limit is {MAX_TEXT}", param=field,
                                  fix=f"shorten the {field}")
    return text or None


class FeedbackStore:
    def __init__(self, db: Database):
        self.db = db
        self.responses = ResponseStore(db)

    # -- votes ------------------------------------------------------------------------------------
    def vote(self, *, response_id: str, key_id: str, user_id: str, rating: str, comment: str | None = None,
             correction: str | None = None) -> tuple[Feedback, bool]:
        """Record or update the vote of (key_id, user_id) on ``response_id``. Returns the vote and
        whether it was new. Only the user the response was served to may vote on it; anyone else
        gets the same :class:`NotFoundError` as for an unknown id (existence is not revealed)."""
        if rating not in RATINGS:
            raise InvalidRequestError(f"rating must be 'up' or 'down', got {rating!r}", param="rating")
        comment, correction = _clean(comment, "comment"), _clean(correction, "correction")
        rec = self.responses.get(response_id)
        if rec is None or rec.key_id != key_id or rec.user_id != user_id:
            raise NotFoundError(f"response {response_id!r} not found", param="response_id",
                                fix="vote with the id of a response served to this user (the `id` of a chat "
                                    "completion or of a /v1/chat answer)")
        now = time.time()
        fid = new_id("fb")
        with self.db.tx() as conn:  # one upsert: replicas voting at once end with one row, the last vote
            row = conn.execute(_upsert_vote(self.db.dialect, dict(
                id=fid, response_id=response_id, key_id=key_id, user_id=user_id, rating=rating, comment=comment,
                correction=correction, model_version=rec.model_version, created_at=now, updated_at=now))).one()
        fid, created, new = row.id, row.created_at, row.id == fid
        return Feedback(fid, response_id, key_id, user_id, rating, rec.model_version, created, now, comment,
                        correction), new

    def get(self, feedback_id: str) -> Feedback | None:
        rows = self.db.query(F.select().where(F.c.id == feedback_id))
        return Feedback(**dict(rows[0])) if rows else None

    def for_response(self, response_id: str, *, key_id: str, user_id: str) -> Feedback | None:
        rows = self.db.query(F.select().where(F.c.response_id == response_id, F.c.key_id == key_id,
                                              F.c.user_id == user_id))
        return Feedback(**dict(rows[0])) if rows else None

    # -- reading for training and export ----------------------------------------------------------
    def voted(self, *, since: float | None = None, until: float | None = None, key_id: str | None = None,
              model_version: str | None = None, limit: int | None = None) -> list[Voted]:
        """Votes in the window (by the time they were last cast), oldest first, with their responses."""
        stmt = (sa.select(F).join(R, R.c.id == F.c.response_id).where(*_window(since, until, key_id, model_version))
                .order_by(F.c.updated_at, F.c.id))
        if limit:
            stmt = stmt.limit(int(limit))
        rows = self.db.query(stmt)
        responses = self._responses([r["response_id"] for r in rows])
        return [Voted(Feedback(**dict(row)), responses[row["response_id"]]) for row in rows]

    def siblings(self, group_ids: list[str]) -> dict[str, list[ResponseRecord]]:
        """Every response of the given sibling groups (a group = a prompt's regenerated answers,
        keyed by the first answer's id), with or without votes."""
        out: dict[str, list[ResponseRecord]] = {g: [] for g in group_ids}
        for chunk in _chunks(group_ids, 400):
            rows = self.db.query(R.select().where(sa.or_(R.c.id.in_(chunk), R.c.parent_id.in_(chunk)))
                                 .order_by(R.c.created_at))
            for row in rows:
                rec = ResponseStore._from_row(row)
                out.setdefault(rec.parent_id or rec.id, []).append(rec)
        return out

    def _responses(self, ids: list[str]) -> dict[str, ResponseRecord]:
        found: dict[str, ResponseRecord] = {}
        for chunk in _chunks(sorted(set(ids)), 800):
            for row in self.db.query(R.select().where(R.c.id.in_(chunk))):
                rec = ResponseStore._from_row(row)
                found[rec.id] = rec
        return found

    # -- statistics -------------------------------------------------------------------------------
    def stats(self, *, key_id: str | None = None, since: float | None = None, until: float | None = None,
              bucket: str = "day") -> dict[str, Any]:
        """Counts and up-ratio per model version, overall and per time bucket (UTC ``day``,
        ``week`` or ``hour``). ``key_id`` restricts to one app key."""
        if bucket not in _BUCKETS:
            raise InvalidRequestError(f"bucket must be one of {sorted(_BUCKETS)}, got {bucket!r}", param="bucket")
        where = _window(since, until, key_id, None)
        up, down = _count(F.c.rating == "up").label("up"), _count(F.c.rating == "down").label("down")
        first_at = sa.func.min(F.c.updated_at).label("first_at")
        rows = self.db.query(
            sa.select(F.c.model_version, up, down, _count(F.c.correction.is_not(None)).label("corrections"), first_at,
                      sa.func.max(F.c.updated_at).label("last_at"))
            .where(*where).group_by(F.c.model_version).order_by(first_at))
        period = _period(self.db.dialect, bucket).label("period")
        series = self.db.query(
            sa.select(period, F.c.model_version, up, down).where(*where)
            .group_by(period, F.c.model_version).order_by(period, F.c.model_version))
        versions = [_ratio(dict(r)) for r in rows]
        total_up = sum(v["up"] for v in versions)
        total_down = sum(v["down"] for v in versions)
        return {"bucket": bucket, "total": _ratio({"up": total_up, "down": total_down}),
                "versions": versions, "series": [_ratio(dict(r)) for r in series]}


def _ratio(row: dict[str, Any]) -> dict[str, Any]:
    up, down = int(row.get("up") or 0), int(row.get("down") or 0)
    row["up"], row["down"] = up, down
    row["total"] = up + down
    row["up_ratio"] = round(up / (up + down), 4) if up + down else None
    return row


def _window(since: float | None, until: float | None, key_id: str | None,
            model_version: str | None) -> list[sa.ColumnElement[bool]]:
    clauses = []
    if since is not None:
        clauses.append(F.c.updated_at >= since)
    if until is not None:
        clauses.append(F.c.updated_at < until)
    if key_id is not None:
        clauses.append(F.c.key_id == key_id)
    if model_version is not None:
        clauses.append(F.c.model_version == model_version)
    return clauses


def _count(condition: sa.ColumnElement[bool]) -> sa.ColumnElement[int]:
    return sa.func.sum(sa.case((condition, 1), else_=0))


# UTC time buckets of ``feedback.updated_at`` (Unix seconds), as SQLite strftime / Postgres to_char formats
_BUCKETS = {"hour": ("%Y-%m-%dT%H:00Z", 'YYYY-MM-DD"T"HH24":00Z"'), "day": ("%Y-%m-%d", "YYYY-MM-DD"),
            "week": ("%Y-W%W", None)}


def _period(dialect: str, bucket: str) -> sa.ColumnElement[str]:
    sqlite_fmt, pg_fmt = _BUCKETS[bucket]
    if dialect != "postgresql":
        return sa.func.strftime(sqlite_fmt, F.c.updated_at, "unixepoch")
    at = sa.func.timezone("UTC", sa.func.to_timestamp(F.c.updated_at))
    if pg_fmt is not None:
        return sa.func.to_char(at, pg_fmt)
    # SQLite's (and C's) %W: (day of year from 0 + 7 - weekday from Monday = 0) // 7
    yday = sa.cast(sa.func.extract("doy", at), sa.Integer) - 1
    wday = sa.cast(sa.func.extract("isodow", at), sa.Integer) - 1
    week = (yday + 7 - wday) // 7
    return sa.func.to_char(at, "YYYY") + "-W" + sa.func.lpad(sa.cast(week, sa.Text), 2, "0")


def _upsert_vote(dialect: str, values: dict[str, Any]) -> sa.Executable:
    """Insert a vote, or update the user's earlier vote on that response; returns (id, created_at)."""
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    stmt = insert(F).values(**values)
    return stmt.on_conflict_do_update(
        index_elements=["response_id", "key_id", "user_id"],
        set_={c: stmt.excluded[c] for c in ("rating", "comment", "correction", "updated_at")},
    ).returning(F.c.id, F.c.created_at)


def _chunks(items: list[str], size: int) -> list[list[str]]:
    return [items[i:i + size] for i in range(0, len(items), size)]

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
from agentstack.storage.sqlite import Database

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
        with self.db.tx() as conn:
            row = conn.execute("SELECT id, created_at FROM feedback WHERE response_id = ? AND key_id = ? AND "
                               "user_id = ?", (response_id, key_id, user_id)).fetchone()
            if row is None:
                fid, created, new = new_id("fb"), now, True
                conn.execute("INSERT INTO feedback (id, response_id, key_id, user_id, rating, comment, correction, "
                             "model_version, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                             (fid, response_id, key_id, user_id, rating, comment, correction, rec.model_version,
                              now, now))
            else:
                fid, created, new = row["id"], row["created_at"], False
                conn.execute("UPDATE feedback SET rating = ?, comment = ?, correction = ?, updated_at = ? "
                             "WHERE id = ?", (rating, comment, correction, now, fid))
        return Feedback(fid, response_id, key_id, user_id, rating, rec.model_version, created, now, comment,
                        correction), new

    def get(self, feedback_id: str) -> Feedback | None:
        rows = self.db.query("SELECT * FROM feedback WHERE id = ?", (feedback_id,))
        return Feedback(**dict(rows[0])) if rows else None

    def for_response(self, response_id: str, *, key_id: str, user_id: str) -> Feedback | None:
        rows = self.db.query("SELECT * FROM feedback WHERE response_id = ? AND key_id = ? AND user_id = ?",
                             (response_id, key_id, user_id))
        return Feedback(**dict(rows[0])) if rows else None

    # -- reading for training and export ----------------------------------------------------------
    def voted(self, *, since: float | None = None, until: float | None = None, key_id: str | None = None,
              model_version: str | None = None, limit: int | None = None) -> list[Voted]:
        """Votes in the window (by the time they were last cast), oldest first, with their responses."""
        where, params = _window(since, until, key_id, model_version, alias="f")
        sql = (f"SELECT f.*, r.id AS r_id FROM feedback f JOIN responses r ON r.id = f.response_id {where} "
               "ORDER BY f.updated_at, f.id")
        if limit:
            sql += f" LIMIT {int(limit)}"
        rows = self.db.query(sql, params)
        ids = [r["r_id"] for r in rows]
        responses = self._responses(ids)
        out = []
        for row in rows:
            data = dict(row)
            data.pop("r_id")
            out.append(Voted(Feedback(**data), responses[row["response_id"]]))
        return out

    def siblings(self, group_ids: list[str]) -> dict[str, list[ResponseRecord]]:
        """Every response of the given sibling groups (a group = a prompt's regenerated answers,
        keyed by the first answer's id), with or without votes."""
        out: dict[str, list[ResponseRecord]] = {g: [] for g in group_ids}
        for chunk in _chunks(group_ids, 400):
            marks = ",".join("?" * len(chunk))
            rows = self.db.query(f"SELECT * FROM responses WHERE id IN ({marks}) OR parent_id IN ({marks}) "
                                 "ORDER BY created_at", (*chunk, *chunk))
            for row in rows:
                rec = ResponseStore._from_row(row)
                out.setdefault(rec.parent_id or rec.id, []).append(rec)
        return out

    def _responses(self, ids: list[str]) -> dict[str, ResponseRecord]:
        found: dict[str, ResponseRecord] = {}
        for chunk in _chunks(sorted(set(ids)), 800):
            marks = ",".join("?" * len(chunk))
            for row in self.db.query(f"SELECT * FROM responses WHERE id IN ({marks})", tuple(chunk)):
                rec = ResponseStore._from_row(row)
                found[rec.id] = rec
        return found

    # -- statistics -------------------------------------------------------------------------------
    def stats(self, *, key_id: str | None = None, since: float | None = None, until: float | None = None,
              bucket: str = "day") -> dict[str, Any]:
        """Counts and up-ratio per model version, overall and per time bucket (UTC ``day``,
        ``week`` or ``hour``). ``key_id`` restricts to one app key."""
        formats = {"hour": "%Y-%m-%dT%H:00Z", "day": "%Y-%m-%d", "week": "%Y-W%W"}
        if bucket not in formats:
            raise InvalidRequestError(f"bucket must be one of {sorted(formats)}, got {bucket!r}", param="bucket")
        where, params = _window(since, until, key_id, None, alias="")
        rows = self.db.query(
            f"SELECT model_version, sum(rating = 'up') AS up, sum(rating = 'down') AS down, "
            f"sum(correction IS NOT NULL) AS corrections, min(updated_at) AS first_at, max(updated_at) AS last_at "
            f"FROM feedback {where} GROUP BY model_version ORDER BY first_at", params)
        series = self.db.query(
            f"SELECT strftime('{formats[bucket]}', updated_at, 'unixepoch') AS period, model_version, "
            f"sum(rating = 'up') AS up, sum(rating = 'down') AS down FROM feedback {where} "
            "GROUP BY period, model_version ORDER BY period, model_version", params)
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


def _window(since: float | None, until: float | None, key_id: str | None, model_version: str | None,
            alias: str) -> tuple[str, tuple[Any, ...]]:
    p = f"{alias}." if alias else ""
    clauses, params = [], []
    if since is not None:
        clauses.append(f"{p}updated_at >= ?")
        params.append(since)
    if until is not None:
        clauses.append(f"{p}updated_at < ?")
        params.append(until)
    if key_id is not None:
        clauses.append(f"{p}key_id = ?")
        params.append(key_id)
    if model_version is not None:
        clauses.append(f"{p}model_version = ?")
        params.append(model_version)
    return ("WHERE " + " AND ".join(clauses) if clauses else ""), tuple(params)


def _chunks(items: list[str], size: int) -> list[list[str]]:
    return [items[i:i + size] for i in range(0, len(items), size)]

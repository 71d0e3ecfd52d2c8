"""Every completion agentstack serves is stored here: the rendered prompt exactly as the model saw
it, the answer, the model version and the parameters. Its id is what feedback refers to, and what
preference data is later built from, so the record is self-contained (retrieved text included)
and survives later edits to the index.

This module knows nothing about HTTP or engines; it reads and writes rows.
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from agentstack.storage.sqlite import Database


def new_id(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(12)}"


@dataclass
class ResponseRecord:
    id: str
    key_id: str
    user_id: str
    endpoint: str
    model: str
    model_version: str
    messages: list[dict[str, Any]]
    params: dict[str, Any]
    answer: str
    rendered_prompt: str | None = None
    finish_reason: str | None = None
    mode: str = "plain"
    conversation_id: str | None = None
    parent_id: str | None = None
    turn: int | None = None
    prompt_template_version: str | None = None
    sources: list[dict[str, Any]] | None = None
    trace: list[dict[str, Any]] | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    latency_ms: float | None = None
    created_at: float = field(default_factory=time.time)
    grounding: dict[str, Any] | None = None  # per-claim scores and the decision (agentstack/grounding)

    def public(self) -> dict[str, Any]:
        return asdict(self)


_JSON = {"messages": "messages_json", "params": "params_json", "sources": "sources_json", "trace": "trace_json",
         "grounding": "grounding_json"}


class ResponseStore:
    def __init__(self, db: Database):
        self.db = db

    def record(self, rec: ResponseRecord) -> None:
        row = asdict(rec)
        for attr, column in _JSON.items():
            value = row.pop(attr)
            row[column] = json.dumps(value, ensure_ascii=False) if value is not None else None
        columns = ", ".join(row)
        marks = ", ".join(f":{c}" for c in row)
        with self.db.tx() as conn:
            conn.execute(f"INSERT INTO responses ({columns}) VALUES ({marks})", row)

    def get(self, response_id: str) -> ResponseRecord | None:
        rows = self.db.query("SELECT * FROM responses WHERE id = ?", (response_id,))
        return self._from_row(rows[0]) if rows else None

    @staticmethod
    def _from_row(row: Any) -> ResponseRecord:
        data = dict(row)
        for attr, column in _JSON.items():
            raw = data.pop(column)
            data[attr] = json.loads(raw) if raw is not None else None
        return ResponseRecord(**data)


class ConversationStore:
    """Conversations of one end user (an app key + the app's ``X-User-Id``). A conversation is the
    ordered turns of its responses; regenerated answers are siblings in the same turn, and the
    newest sibling is the one later turns build on."""

    def __init__(self, db: Database):
        self.db = db

    def create(self, *, key_id: str, user_id: str, mode: str, index_name: str | None, title: str) -> str:
        conv_id = new_id("conv")
        now = time.time()
        with self.db.tx() as conn:
            conn.execute("INSERT INTO conversations (id, key_id, user_id, title, mode, index_name, created_at, "
                         "updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                         (conv_id, key_id, user_id, title[:120], mode, index_name, now, now))
        return conv_id

    def get(self, conv_id: str, *, key_id: str, user_id: str) -> dict[str, Any]:
        """The conversation if this user owns it; NotFoundError otherwise (existence is not revealed)."""
        from agentstack.errors import NotFoundError

        rows = self.db.query("SELECT * FROM conversations WHERE id = ? AND key_id = ? AND user_id = ?",
                             (conv_id, key_id, user_id))
        if not rows:
            raise NotFoundError(f"conversation {conv_id!r} not found", param="conversation_id")
        return dict(rows[0])

    def turns(self, conv_id: str) -> list[ResponseRecord]:
        """The newest sibling of each turn, in turn order."""
        rows = self.db.query(
            "SELECT * FROM responses r WHERE conversation_id = ? AND created_at = (SELECT max(created_at) FROM "
            "responses s WHERE s.conversation_id = r.conversation_id AND s.turn = r.turn) ORDER BY turn",
            (conv_id,))
        return [ResponseStore._from_row(r) for r in rows]

    def history(self, conv_id: str) -> list[dict[str, Any]]:
        """The conversation so far as chat messages (user turn, chosen answer, …)."""
        messages: list[dict[str, Any]] = []
        for rec in self.turns(conv_id):
            messages.append(rec.messages[-1])
            messages.append({"role": "assistant", "content": rec.answer})
        return messages

    def next_turn(self, conv_id: str) -> int:
        row = self.db.query("SELECT coalesce(max(turn), -1) + 1 AS t FROM responses WHERE conversation_id = ?",
                            (conv_id,))
        return int(row[0]["t"])

    def touch(self, conv_id: str) -> None:
        with self.db.tx() as conn:
            conn.execute("UPDATE conversations SET updated_at = ? WHERE id = ?", (time.time(), conv_id))

    def list(self, *, key_id: str, user_id: str, limit: int = 50, offset: int = 0) -> list[dict[str, Any]]:
        rows = self.db.query(
            "SELECT c.*, (SELECT count(DISTINCT turn) FROM responses r WHERE r.conversation_id = c.id) AS turns "
            "FROM conversations c WHERE key_id = ? AND user_id = ? ORDER BY updated_at DESC LIMIT ? OFFSET ?",
            (key_id, user_id, limit, offset))
        return [dict(r) for r in rows]

    def detail(self, conv_id: str) -> list[dict[str, Any]]:
        """Every turn with all its siblings (oldest first), for reading a conversation back."""
        rows = self.db.query("SELECT * FROM responses WHERE conversation_id = ? ORDER BY turn, created_at",
                             (conv_id,))
        turns: dict[int, list[ResponseRecord]] = {}
        for row in rows:
            rec = ResponseStore._from_row(row)
            turns.setdefault(rec.turn or 0, []).append(rec)
        return [{"turn": t, "user": recs[0].messages[-1], "answers": [public_response(r) for r in recs]}
                for t, recs in sorted(turns.items())]

    def delete(self, conv_id: str) -> None:
        with self.db.tx() as conn:
            conn.execute("DELETE FROM responses WHERE conversation_id = ?", (conv_id,))
            conn.execute("DELETE FROM conversations WHERE id = ?", (conv_id,))


def public_response(rec: ResponseRecord) -> dict[str, Any]:
    """What an app sees of a stored response (no rendered prompt, no key id)."""
    return {"id": rec.id, "conversation_id": rec.conversation_id, "parent_id": rec.parent_id, "turn": rec.turn,
            "mode": rec.mode, "answer": rec.answer, "sources": rec.sources or [], "trace": rec.trace or [],
            "model_version": rec.model_version, "finish_reason": rec.finish_reason,
            "usage": {"prompt_tokens": rec.prompt_tokens, "completion_tokens": rec.completion_tokens},
            "created_at": rec.created_at, "grounding": rec.grounding}

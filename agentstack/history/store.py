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

import sqlalchemy as sa

from agentstack.storage.database import Database
from agentstack.storage.schema import conversations as C
from agentstack.storage.schema import responses as R


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
        with self.db.tx() as conn:
            conn.execute(R.insert().values(**row))

    def get(self, response_id: str) -> ResponseRecord | None:
        rows = self.db.query(R.select().where(R.c.id == response_id))
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
            conn.execute(C.insert().values(id=conv_id, key_id=key_id, user_id=user_id, title=title[:120], mode=mode,
                                           index_name=index_name, created_at=now, updated_at=now))
        return conv_id

    def get(self, conv_id: str, *, key_id: str, user_id: str) -> dict[str, Any]:
        """The conversation if this user owns it; NotFoundError otherwise (existence is not revealed)."""
        from agentstack.errors import NotFoundError

        rows = self.db.query(C.select().where(C.c.id == conv_id, C.c.key_id == key_id, C.c.user_id == user_id))
        if not rows:
            raise NotFoundError(f"conversation {conv_id!r} not found", param="conversation_id")
        return dict(rows[0])

    def turns(self, conv_id: str) -> list[ResponseRecord]:
        """The newest sibling of each turn, in turn order."""
        s = R.alias("s")
        newest = sa.select(sa.func.max(s.c.created_at)).where(s.c.conversation_id == R.c.conversation_id,
                                                               s.c.turn == R.c.turn).scalar_subquery()
        rows = self.db.query(R.select().where(R.c.conversation_id == conv_id, R.c.created_at == newest)
                             .order_by(R.c.turn))
        return [ResponseStore._from_row(r) for r in rows]

    def history(self, conv_id: str) -> list[dict[str, Any]]:
        """The conversation so far as chat messages (user turn, chosen answer, …)."""
        messages: list[dict[str, Any]] = []
        for rec in self.turns(conv_id):
            messages.append(rec.messages[-1])
            messages.append({"role": "assistant", "content": rec.answer})
        return messages

    def next_turn(self, conv_id: str) -> int:
        row = self.db.query(sa.select((sa.func.coalesce(sa.func.max(R.c.turn), -1) + 1).label("t"))
                            .where(R.c.conversation_id == conv_id))
        return int(row[0]["t"])

    def touch(self, conv_id: str) -> None:
        with self.db.tx() as conn:
            conn.execute(C.update().where(C.c.id == conv_id).values(updated_at=time.time()))

    def list(self, *, key_id: str, user_id: str, limit: int = 50, offset: int = 0) -> list[dict[str, Any]]:
        turns = (sa.select(sa.func.count(sa.distinct(R.c.turn))).where(R.c.conversation_id == C.c.id)
                 .scalar_subquery().label("turns"))
        rows = self.db.query(sa.select(C, turns).where(C.c.key_id == key_id, C.c.user_id == user_id)
                             .order_by(C.c.updated_at.desc()).limit(limit).offset(offset))
        return [dict(r) for r in rows]

    def detail(self, conv_id: str) -> list[dict[str, Any]]:
        """Every turn with all its siblings (oldest first), for reading a conversation back."""
        rows = self.db.query(R.select().where(R.c.conversation_id == conv_id).order_by(R.c.turn, R.c.created_at))
        turns: dict[int, list[ResponseRecord]] = {}
        for row in rows:
            rec = ResponseStore._from_row(row)
            turns.setdefault(rec.turn or 0, []).append(rec)
        return [{"turn": t, "user": recs[0].messages[-1], "answers": [public_response(r) for r in recs]}
                for t, recs in sorted(turns.items())]

    def delete(self, conv_id: str) -> None:
        with self.db.tx() as conn:
            conn.execute(R.delete().where(R.c.conversation_id == conv_id))
            conn.execute(C.delete().where(C.c.id == conv_id))


def public_response(rec: ResponseRecord) -> dict[str, Any]:
    """What an app sees of a stored response (no rendered prompt, no key id)."""
    return {"id": rec.id, "conversation_id": rec.conversation_id, "parent_id": rec.parent_id, "turn": rec.turn,
            "mode": rec.mode, "answer": rec.answer, "sources": rec.sources or [], "trace": rec.trace or [],
            "model_version": rec.model_version, "finish_reason": rec.finish_reason,
            "usage": {"prompt_tokens": rec.prompt_tokens, "completion_tokens": rec.completion_tokens},
            "created_at": rec.created_at, "grounding": rec.grounding}

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

    def public(self) -> dict[str, Any]:
        return asdict(self)


_JSON = {"messages": "messages_json", "params": "params_json", "sources": "sources_json", "trace": "trace_json"}


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

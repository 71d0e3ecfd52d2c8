"""The audit log: every operator action, with who, what, when and the outcome.

Rows are only ever appended. The server records an action after it is authorised, whether it
then succeeds or fails, so a refused or failed promotion is as visible as a successful one.
"""

from __future__ import annotations

import json
import time
from typing import Any

from agentstack.storage.sqlite import Database


class AuditLog:
    def __init__(self, db: Database):
        self.db = db

    def record(self, *, key_id: str, action: str, target: str | None = None, user_id: str | None = None,
               detail: dict[str, Any] | None = None, outcome: str = "ok") -> int:
        with self.db.tx() as conn:
            cur = conn.execute(
                "INSERT INTO audit_log (at, key_id, user_id, action, target, detail_json, outcome) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (time.time(), key_id, user_id, action, target,
                 json.dumps(detail, default=str) if detail else None, outcome))
            return int(cur.lastrowid)

    def list(self, *, limit: int = 100, offset: int = 0, action: str | None = None) -> list[dict[str, Any]]:
        where, params = "", []
        if action:
            where, params = "WHERE action = ?", [action]
        rows = self.db.query(f"SELECT * FROM audit_log {where} ORDER BY id DESC LIMIT ? OFFSET ?",
                             (*params, limit, offset))
        out = []
        for row in rows:
            item = dict(row)
            item["detail"] = json.loads(item.pop("detail_json")) if item.get("detail_json") else None
            out.append(item)
        return out

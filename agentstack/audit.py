"""The audit log: every operator action, with who, what, when and the outcome.

Rows are only ever appended. The server records an action after it is authorised, whether it
then succeeds or fails, so a refused or failed promotion is as visible as a successful one.
"""

from __future__ import annotations

import json
import time
from typing import Any

from agentstack.storage.database import Database
from agentstack.storage.schema import audit_log as A


class AuditLog:
    def __init__(self, db: Database):
        self.db = db

    def record(self, *, key_id: str, action: str, target: str | None = None, user_id: str | None = None,
               detail: dict[str, Any] | None = None, outcome: str = "ok") -> int:
        with self.db.tx() as conn:
            result = conn.execute(A.insert().values(
                at=time.time(), key_id=key_id, user_id=user_id, action=action, target=target,
                detail_json=json.dumps(detail, default=str) if detail else None, outcome=outcome))
            return int(result.inserted_primary_key[0])

    def list(self, *, limit: int = 100, offset: int = 0, action: str | None = None) -> list[dict[str, Any]]:
        stmt = A.select().order_by(A.c.id.desc()).limit(limit).offset(offset)
        if action:
            stmt = stmt.where(A.c.action == action)
        rows = self.db.query(stmt)
        out = []
        for row in rows:
            item = dict(row)
            item["detail"] = json.loads(item.pop("detail_json")) if item.get("detail_json") else None
            out.append(item)
        return out

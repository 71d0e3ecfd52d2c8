"""Operator routes that are not about one subsystem's resources: the audit log and deleting an
end user's data (operator role only).

* ``GET /v1/admin/audit`` (``?limit=&offset=&action=``): newest first; each entry has who (key id,
  user), what (action, target, detail), when (``at``, Unix seconds) and the outcome.
* ``DELETE /v1/admin/users/{user_id}/data`` (``?key_id=`` to limit to one app key): deletes the
  user's conversations, responses and feedback, so no future training set contains them; returns
  the counts. The audit entry names the user by a pseudonym (a keyed HMAC of the id, see
  ``agentstack/feedback/privacy.py``), not the id itself.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Query

from agentstack.feedback import privacy
from server.deps import Operator, Svc

router = APIRouter(prefix="/v1/admin", tags=["Admin (operator)"])


@router.get("/audit", summary="The audit log, newest first")
async def audit_log(op: Operator, svc: Svc, limit: int = Query(default=100, ge=1, le=1000),
                    offset: int = Query(default=0, ge=0), action: str | None = None) -> dict[str, Any]:
    rows = await asyncio.to_thread(svc.audit.list, limit=limit, offset=offset, action=action)
    return {"object": "list", "data": rows}


@router.delete("/users/{user_id}/data", summary="Delete an end user's conversations, responses and feedback")
async def delete_user_data(user_id: str, op: Operator, svc: Svc, key_id: str | None = None) -> dict[str, Any]:
    counts = await asyncio.to_thread(privacy.delete_user_data, svc.db, user_id, key_id=key_id)
    pseudonym = privacy.pseudonym(user_id, await asyncio.to_thread(svc.pseudonym_key))
    await asyncio.to_thread(svc.audit.record, key_id=op.key_id, user_id=op.user_id, action="privacy.delete_user",
                            target=pseudonym, detail={"key_id": key_id, **counts})
    return {"user": pseudonym, "key_id": key_id, "deleted": counts}

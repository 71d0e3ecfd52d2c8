"""Thumbs feedback over HTTP.

* ``POST /v1/feedback`` (app): ``{response_id, rating: "up"|"down", comment?, correction?}`` from
  the end user the response was served to (key + ``X-User-Id``). Voting again updates the vote.
  Unknown (or someone else's) response: 404; a rating other than up/down: 422.
* ``GET /v1/feedback/stats`` (app): counts and up-ratio per model version, overall and per time
  bucket. An app key sees its own votes; an operator key sees all (or one key with ``key_id``).
* ``GET /v1/admin/feedback/export`` (operator): the votes as JSONL, every text PII-scrubbed,
  users pseudonymised (``agentstack feedback export``). Audited.

The work is in ``agentstack.feedback``; routes look up, check, act.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse
from pydantic import BeforeValidator, ConfigDict, Field

from agentstack.strict import StrictModel

from server.deps import AppUser, Operator, Svc

router = APIRouter(tags=["Feedback"])


class FeedbackRequest(StrictModel):
    model_config = ConfigDict(extra="forbid")

    response_id: str = Field(min_length=1, max_length=200, description="The `id` of a chat completion or of a "
                             "/v1/chat answer served to this user.")
    rating: Literal["up", "down"] = Field(description="Thumbs up or down.")
    comment: str | None = Field(default=None, max_length=8000, description="Why (optional).")
    correction: str | None = Field(default=None, max_length=8000, description="The answer the user would have "
                                   "wanted (optional); it becomes a preference pair against the rated answer.")


def _ts(value: float | datetime | None) -> float | None:
    return value.timestamp() if isinstance(value, datetime) else value


def _time(value: Any) -> Any:
    """Unix seconds or ISO 8601, with an error that says so (pydantic's names each union branch)."""
    if value is None or isinstance(value, (int, float, datetime)):
        return value
    try:
        return float(value)
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{value!r} is neither Unix seconds nor an ISO 8601 time") from None


# The validator must sit inside Annotated with the Query (FastAPI drops it when Query is the default).
Since = Annotated[float | datetime | None, BeforeValidator(_time),
                  Query(description="From this time: Unix seconds or an ISO 8601 date-time.")]
Until = Annotated[float | datetime | None, BeforeValidator(_time),
                  Query(description="Up to this time: Unix seconds or an ISO 8601 date-time.")]


@router.post("/v1/feedback", summary="Thumbs up or down on a served response (app)")
async def post_feedback(body: FeedbackRequest, user: AppUser, svc: Svc) -> dict[str, Any]:
    store = svc.alignment.feedback
    vote, created = await asyncio.to_thread(store.vote, response_id=body.response_id, key_id=user.key_id,
                                            user_id=user.user_id, rating=body.rating, comment=body.comment,
                                            correction=body.correction)
    return {"id": vote.id, "response_id": vote.response_id, "rating": vote.rating,
            "model_version": vote.model_version, "created": created, "created_at": vote.created_at,
            "updated_at": vote.updated_at}


@router.get("/v1/feedback/stats", summary="Votes per model version, overall and over time")
async def feedback_stats(user: AppUser, svc: Svc, since: Since = None,
                         until: Until = None,
                         bucket: Literal["hour", "day", "week"] = "day",
                         key_id: str | None = Query(default=None, description="Operators: one key only.")
                         ) -> dict[str, Any]:
    scope = key_id if user.has("operator") else user.key_id
    stats = await asyncio.to_thread(svc.alignment.feedback.stats, key_id=scope, since=_ts(since),
                                    until=_ts(until), bucket=bucket)
    return {**stats, "key_id": scope}


@router.get("/v1/admin/feedback/export", summary="All votes as scrubbed JSONL (operator)",
            response_class=StreamingResponse)
async def export_feedback(op: Operator, svc: Svc, since: Since = None,
                          until: Until = None,
                          model_version: str | None = None) -> StreamingResponse:
    from agentstack.feedback.export import export_records

    alignment = svc.alignment
    lo, hi = _ts(since), _ts(until)
    salt = svc.settings.privacy.hash_salt.get_secret_value().encode() if svc.settings.privacy.hash_salt else None
    await asyncio.to_thread(alignment.scrubber.warm_up)
    records = await asyncio.to_thread(lambda: list(export_records(alignment.feedback, alignment.scrubber, since=lo,
                                                                  until=hi, model_version=model_version, salt=salt)))
    await asyncio.to_thread(svc.audit.record, key_id=op.key_id, user_id=op.user_id, action="feedback.export",
                            detail={"since": lo, "until": hi, "model_version": model_version, "records": len(records),
                                    "pii_policy": alignment.scrubber.policy_id})

    async def lines() -> AsyncIterator[bytes]:
        for rec in records:
            yield (json.dumps(rec, ensure_ascii=False) + "\n").encode()

    return StreamingResponse(lines(), media_type="application/x-ndjson",
                             headers={"Content-Disposition": "attachment; filename=feedback.jsonl"})

"""Feedback as JSONL records for export (``agentstack feedback export``, ``GET /v1/admin/feedback/export``).

Each record is one vote with the response it rates, every text PII-scrubbed by
:class:`~agentstack.feedback.scrub.TextScrubber` before it is yielded. End users appear only as a
pseudonym: an HMAC of (key id, user id) keyed with ``privacy.hash_salt`` when one is set (stable
across exports), otherwise with a random key per export (consistent within one file, not linkable
across files). Retrieved sources are listed by id and title; their text was scrubbed when indexed.

This module knows nothing about HTTP or files; it yields dictionaries.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterator
from typing import Any

from agentstack.feedback.scrub import TextScrubber
from agentstack.feedback.store import FeedbackStore, Voted


def rejected_raw_answer(grounding: dict[str, Any] | None) -> str | None:
    """The answer as the model wrote it, when the groundedness verifier found a sentence in it that
    its sources do not support, or one that repeats an earlier sentence (a loop): negative
    preference data. Else None."""
    if not grounding or not grounding.get("raw_answer"):
        return None
    if any(not c.get("supported", True) or c.get("repeats") is not None for c in grounding.get("claims", [])):
        return grounding["raw_answer"]
    return None


def export_grounding(grounding: dict[str, Any] | None, scrubber: TextScrubber) -> dict[str, Any] | None:
    """The verifier's verdict for an export: decision, scores and scrubbed sentence texts (sources
    are referenced by number; their text was scrubbed when indexed and is not repeated)."""
    if not grounding:
        return None
    claims = [{"text": scrubber.text(c.get("text")), **{k: c.get(k) for k in (
        "support", "answers", "supported", "answers_question", "source", "citations", "citations_dropped",
        "repeats")}}
        for c in grounding.get("claims", [])]
    return {"decision": grounding.get("decision"), "reason": grounding.get("reason"),
            "answer_score": grounding.get("answer_score"), "claims": claims,
            "unsupported_claims": sum(1 for c in claims if c.get("supported") is False),
            "repeated_claims": sum(1 for c in claims if c.get("repeats") is not None),
            "raw_answer": scrubber.text(grounding.get("raw_answer")), "version": grounding.get("version")}


def prompt_messages(voted_response: Any) -> list[dict[str, Any]]:
    """The messages the model answered: the orchestrator's prompt (system prompt and sources
    included) when it was recorded, else the request's messages."""
    params = voted_response.params or {}
    messages = params.get("prompt_messages") or voted_response.messages
    return [{"role": m.get("role"), "content": m.get("content")} for m in messages]


class Pseudonymizer:
    def __init__(self, salt: bytes | None):
        self._key = salt or secrets.token_bytes(32)
        self.stable = salt is not None

    def __call__(self, key_id: str, user_id: str) -> str:
        return hmac.new(self._key, f"{key_id}\x00{user_id}".encode(), hashlib.sha256).hexdigest()[:16]


def export_records(store: FeedbackStore, scrubber: TextScrubber, *, since: float | None = None,
                   until: float | None = None, model_version: str | None = None,
                   salt: bytes | None = None) -> Iterator[dict[str, Any]]:
    pseudonym = Pseudonymizer(salt)
    for item in store.voted(since=since, until=until, model_version=model_version):
        yield record(item, scrubber, pseudonym)


def record(item: Voted, scrubber: TextScrubber, pseudonym: Pseudonymizer) -> dict[str, Any]:
    fb, rec = item.feedback, item.response
    return {
        "feedback_id": fb.id, "response_id": rec.id, "rating": fb.rating,
        "comment": scrubber.text(fb.comment), "correction": scrubber.text(fb.correction),
        "model_version": fb.model_version, "voted_at": fb.updated_at, "first_voted_at": fb.created_at,
        "user": pseudonym(fb.key_id, fb.user_id), "key_id": fb.key_id,
        "prompt": scrubber.messages(prompt_messages(rec)), "answer": scrubber.text(rec.answer),
        "mode": rec.mode, "sibling_group": rec.parent_id or rec.id, "conversation_id": rec.conversation_id,
        "turn": rec.turn, "prompt_template_version": rec.prompt_template_version,
        "sources": [{"id": s.get("doc_id") or s.get("id"), "title": s.get("title"), "index": s.get("index")}
                    for s in (rec.sources or [])],
        "params": {k: v for k, v in (rec.params or {}).items() if k != "prompt_messages"},
        "answered_at": rec.created_at, "grounding": export_grounding(rec.grounding, scrubber),
    }

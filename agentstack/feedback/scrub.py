"""The one gate between stored conversations and anything that leaves the database for training or
export: every text (prompt messages, answers, corrections, comments) passes the PII scrubber of
``policies/pii.yaml`` here.

:class:`TextScrubber` builds the Presidio scrubber lazily (warm-up takes seconds), caches results
by text (system prompts and RAG contexts repeat), and counts what it replaced per entity type,
never the values. With ``alignment.preferences.scrub_pii`` off it passes text through and says so
in its ``policy_id``.

This module knows nothing about training or HTTP.
"""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

from agentstack.config import Settings

_CACHE_LIMIT = 20_000


class TextScrubber:
    def __init__(self, settings: Settings, *, enabled: bool | None = None, scrubber: Any = None):
        self.settings = settings
        self.enabled = settings.alignment.preferences.scrub_pii if enabled is None else enabled
        self._scrubber = scrubber
        self._cache: dict[str, str] = {}
        self._lock = threading.Lock()
        self.counts: Counter[str] = Counter()

    def _get(self) -> Any:
        if self._scrubber is None:
            from agentstack.ingest.pii import build_scrubber, load_policy
            from agentstack.resources import resource_file

            policy = load_policy(resource_file("policies", "pii.yaml", self.settings.policies_dir))
            scrubber = build_scrubber(policy, self.settings.privacy, self.settings.model_cache)
            if hasattr(scrubber, "warm_up"):
                scrubber.warm_up()
            self._scrubber = scrubber
        return self._scrubber

    def warm_up(self) -> None:
        if self.enabled:
            self._get()

    @property
    def policy_id(self) -> str:
        return self._get().policy_id if self.enabled else "none (alignment.preferences.scrub_pii=false)"

    def text(self, text: str | None) -> str | None:
        if text is None or not self.enabled or not text.strip():
            return text
        with self._lock:
            hit = self._cache.get(text)
        if hit is not None:
            return hit
        result = self._get().scrub(text)
        with self._lock:
            self.counts.update(result.counts)
            if len(self._cache) >= _CACHE_LIMIT:
                self._cache.clear()
            self._cache[text] = result.text
        return result.text

    def messages(self, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Chat messages with every string content scrubbed (other keys kept; list contents keep
        their non-text parts)."""
        out = []
        for msg in messages:
            msg = dict(msg)
            content = msg.get("content")
            if isinstance(content, str):
                msg["content"] = self.text(content)
            elif isinstance(content, list):
                msg["content"] = [{**part, "text": self.text(part.get("text"))} if isinstance(part, dict)
                                  and part.get("type") == "text" else part for part in content]
            out.append(msg)
        return out

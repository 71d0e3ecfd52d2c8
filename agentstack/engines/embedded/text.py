"""Token ids to streamed text: incremental detokenisation and stop strings.

Decoding token by token breaks multi-byte characters and word-piece spacing, so
:class:`IncrementalText` decodes a sliding window (the prefix-offset method of TGI and vLLM) and only
releases text once it is stable. Stop strings may straddle tokens: text that could still be the
start of a stop string is held back until it is either confirmed (the stream ends there) or
ruled out (released).

This module knows nothing about models or batching; it needs a tokenizer with ``decode``.
"""

from __future__ import annotations

from typing import Any


class IncrementalText:
    def __init__(self, tokenizer: Any, stop: list[str] | tuple[str, ...] = ()):
        self._tok = tokenizer
        self._ids: list[int] = []
        self._prefix_offset = 0
        self._read_offset = 0
        self._stop = tuple(stop)
        self._max_stop = max((len(s) for s in self._stop), default=0)
        self.text = ""  # all stable text decoded so far
        self._sent = 0  # characters of ``text`` released to the caller
        self.stopped = False

    def _decode(self, ids: list[int]) -> str:
        return self._tok.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)

    def push(self, token_id: int) -> str:
        """Add one token; return the text that may be released now ("" if none). After a stop string
        matches, ``stopped`` is true and the returned text ends just before it."""
        if self.stopped:
            return ""
        self._ids.append(token_id)
        prefix = self._decode(self._ids[self._prefix_offset:self._read_offset])
        full = self._decode(self._ids[self._prefix_offset:])
        if len(full) > len(prefix) and not full.endswith("\ufffd"):
            self.text += full[len(prefix):]
            self._prefix_offset = self._read_offset
            self._read_offset = len(self._ids)
        return self._release()

    def _release(self) -> str:
        if self._stop:
            start = max(0, self._sent - self._max_stop)
            hits = [i for i in (self.text.find(s, start) for s in self._stop) if i >= 0]
            if hits:
                end = min(hits)
                self.stopped = True
                self.text = self.text[:end]
                out = self.text[self._sent:end] if end > self._sent else ""
                self._sent = max(self._sent, end)
                return out
            safe = len(self.text) - self._holdback()
        else:
            safe = len(self.text)
        if safe <= self._sent:
            return ""
        out = self.text[self._sent:safe]
        self._sent = safe
        return out

    def _holdback(self) -> int:
        """Length of the longest suffix of ``text`` that is a proper prefix of a stop string."""
        best = 0
        tail = self.text[-self._max_stop:] if self._max_stop else ""
        for stop in self._stop:
            for k in range(min(len(stop) - 1, len(tail)), best, -1):
                if tail.endswith(stop[:k]):
                    best = k
                    break
        return best

    def flush(self) -> str:
        """The stream ended without a stop string: release everything held back."""
        if self.stopped:
            return ""
        rest = self._decode(self._ids[self._prefix_offset:])
        prefix = self._decode(self._ids[self._prefix_offset:self._read_offset])
        if len(rest) > len(prefix):
            self.text += rest[len(prefix):].rstrip("\ufffd")
            self._prefix_offset = self._read_offset = len(self._ids)
        out = self.text[self._sent:]
        self._sent = len(self.text)
        return out

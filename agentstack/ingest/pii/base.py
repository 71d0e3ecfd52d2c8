"""The PII scrubber contract.

A :class:`Scrubber` turns text into text with personal data replaced according to a policy, and
reports how many entities of each type it found, never the values. Ingestion scrubs every document
before it is chunked, embedded or stored; the feedback path scrubs text before it can reach
training data.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable


@dataclass(frozen=True)
class ScrubResult:
    text: str
    counts: dict[str, int] = field(default_factory=dict)  # entity type -> occurrences (no values)


@runtime_checkable
class Scrubber(Protocol):
    policy_id: str  # identifies the policy + settings that produced the output (goes into manifests)

    def scrub(self, text: str) -> ScrubResult: ...

    def scrub_many(self, texts: list[str]) -> list[ScrubResult]: ...

"""PII scrubbing (Microsoft Presidio, offline). See ``base.py`` for the contract."""

from agentstack.ingest.pii.base import ScrubResult, Scrubber

__all__ = ["ScrubResult", "Scrubber"]

"""PII scrubbing (Microsoft Presidio, offline). See ``base.py`` for the contract and docs/pii.md."""

from agentstack.ingest.pii.base import ScrubResult, Scrubber
from agentstack.ingest.pii.policy import PiiPolicy, build_scrubber, load_policy

__all__ = ["PiiPolicy", "ScrubResult", "Scrubber", "build_scrubber", "load_policy"]

"""Conversations and stored responses (every completion the server produced)."""

from agentstack.history.store import ResponseRecord, ResponseStore, new_id

__all__ = ["ResponseRecord", "ResponseStore", "new_id"]

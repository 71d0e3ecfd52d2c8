"""Conversations and stored responses (every completion the server produced)."""

from agentstack.history.store import ConversationStore, ResponseRecord, ResponseStore, new_id, public_response

__all__ = ["ConversationStore", "ResponseRecord", "ResponseStore", "new_id", "public_response"]

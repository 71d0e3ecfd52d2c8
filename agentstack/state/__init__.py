"""State that API replicas share: short-lived counters and notices (``base.SharedState``: held in
this process, or in Redis), and the replica fleet kept in step through the database (``fleet.py``)."""

from agentstack.state.base import SharedState, build_state

__all__ = ["SharedState", "build_state"]

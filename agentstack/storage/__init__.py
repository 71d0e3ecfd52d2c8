"""SQLite helpers shared by every store: connections in WAL mode and ordered migrations."""

from agentstack.storage.sqlite import Database, Migration, connect, transaction

__all__ = ["Database", "Migration", "connect", "transaction"]

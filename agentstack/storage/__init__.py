"""Storage: the main database on SQLAlchemy Core (``database.py``, ``schema.py``, Alembic
``migrations/``, ``migrate.py``, ``copy.py``), the SQLite helpers the index stores use
(``sqlite.py``: WAL connections and ordered migrations) and atomic file writes (``files.py``)."""

from agentstack.storage.sqlite import Database, Migration, connect, transaction

__all__ = ["Database", "Migration", "connect", "transaction"]

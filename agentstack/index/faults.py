"""Named fault-injection points on the index write path, for crash tests (see :mod:`agentstack.faults`).

The write path calls :func:`point` at each step that matters for crash safety (the names are in
:data:`POINTS`, with the phase each belongs to).
"""

from __future__ import annotations

from agentstack.faults import FaultPoints

#: Every point the write path passes through, in order, with the phase it belongs to.
POINTS: dict[str, str] = {
    "load": "load",
    "scrub": "scrub",
    "chunk": "chunk",
    "embed": "embed",
    "sqlite_write": "write",          # inside the SQLite transaction, rows being inserted
    "sqlite_commit": "commit",        # just before COMMIT
    "sqlite_committed": "commit",     # after COMMIT, before the vectors are synced
    "faiss_sync": "write",            # adding/removing vectors in memory
    "faiss_write": "write",           # writing the new versioned FAISS file (temp name)
    "faiss_written": "write",         # FAISS file renamed into place, manifest still old
    "manifest_write": "commit",       # writing the manifest (the publish step)
    "published": "commit",            # manifest renamed: the new version is visible
    "cleanup": "cleanup",             # removing old FAISS files (pgvector: an old epoch's tables)
    # the pgvector backend (one transaction is the whole publish)
    "pg_write": "write",              # inside the transaction, rows being copied in
    "pg_commit": "commit",            # catalog row updated, just before COMMIT
    "pg_committed": "commit",         # after COMMIT: the new version is visible
}

_points = FaultPoints(POINTS)
set_hook = _points.set_hook
raising = _points.raising
point = _points.point

"""Named fault-injection points for crash tests.

The write path calls :func:`point` at each step that matters for crash safety (the names are in
:data:`POINTS`). Normally it does nothing. A test installs a hook with :func:`set_hook` that may
record the phase, raise, or end the process on the spot (``os._exit``) to simulate a crash exactly
there. This is a test seam, not configuration: nothing reads it from the environment.
"""

from __future__ import annotations

from collections.abc import Callable

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
    "cleanup": "cleanup",             # removing old FAISS files
}

_hook: Callable[[str], None] | None = None


def set_hook(hook: Callable[[str], None] | None) -> None:
    """Install (or with None remove) the function called at every point with its name."""
    global _hook
    _hook = hook


def point(name: str) -> None:
    if _hook is not None:
        _hook(name)

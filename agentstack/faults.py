"""Named fault-injection points for crash tests (a test seam, not configuration).

A write path calls ``point(name)`` at each step that matters for crash safety. Normally nothing
happens. A test installs a hook with ``set_hook`` that may record the name, raise, or end the
process on the spot (``os._exit``) to simulate a crash exactly there. Nothing reads it from the
environment. Each subsystem owns one :class:`FaultPoints` (``agentstack.index.faults``,
``agentstack.alignment.faults``) listing its points.
"""

from __future__ import annotations

import errno
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager


class FaultPoints:
    def __init__(self, names: Iterable[str]):
        self.names = tuple(names)
        self._hook: Callable[[str], None] | None = None

    def set_hook(self, hook: Callable[[str], None] | None) -> None:
        """Install (or with None remove) the function called at every point with its name."""
        self._hook = hook

    @contextmanager
    def raising(self, name: str, error: BaseException | None = None) -> Iterator[None]:
        """Inside the block, the point ``name`` raises ``error`` (default: a full disk, ``ENOSPC``);
        the hook is removed on the way out."""
        if name not in self.names:
            raise ValueError(f"unknown fault point {name!r}; known: {', '.join(self.names)}")
        failure = error or OSError(errno.ENOSPC, "No space left on device (injected)")

        def hook(reached: str) -> None:
            if reached == name:
                raise failure

        self.set_hook(hook)
        try:
            yield
        finally:
            self.set_hook(None)

    def point(self, name: str) -> None:
        if name not in self.names:
            raise ValueError(f"unknown fault point {name!r}; known: {', '.join(self.names)}")
        if self._hook is not None:
            self._hook(name)

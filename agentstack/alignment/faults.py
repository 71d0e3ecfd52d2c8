"""Named fault-injection points on the promotion path, for crash tests.

:mod:`deploy` calls :func:`point` after the new adapter is loaded (``promote.loaded``, before the
served alias moves) and after the swap is persisted (``promote.activated``). Normally nothing
happens. A test installs a hook with :func:`set_hook` that may record, raise, or kill the process
right there. A test seam, not configuration: nothing reads it from the environment.
"""

from __future__ import annotations

from collections.abc import Callable

POINTS = ("promote.loaded", "promote.activated")

_hook: Callable[[str], None] | None = None


def set_hook(hook: Callable[[str], None] | None) -> None:
    global _hook
    _hook = hook


def point(name: str) -> None:
    if _hook is not None:
        _hook(name)

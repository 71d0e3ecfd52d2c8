"""Background loops of a server process (the alignment monitor, the readiness check): started on
the running event loop, cancelled and awaited on shutdown."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine
from typing import Any


def start(task: asyncio.Task | None, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task:
    """``task`` if it is already running, else ``coro`` started as a new task named ``name``."""
    if task is not None:
        coro.close()
        return task
    return asyncio.get_running_loop().create_task(coro, name=name)


async def stop(task: asyncio.Task | None) -> None:
    """Cancel ``task`` and wait until it has ended."""
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

"""Awaiting work on behalf of an HTTP client that may go away."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from fastapi import Request

from agentstack.errors import ClientDisconnected, InvalidRequestError


async def until_disconnect(request: Request, work: Any, timeout: float) -> Any:
    """Await ``work``; cancel it if the client goes away or the timeout passes. The work is always
    finished (cancelled and awaited) before this returns, so callers may close what it used."""
    task = asyncio.ensure_future(work)
    deadline = time.monotonic() + timeout
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=0.25)
            if done:
                return task.result()
            if await request.is_disconnected():
                raise ClientDisconnected("the client disconnected; generation cancelled")
            if time.monotonic() > deadline:
                raise InvalidRequestError(f"generation took longer than {timeout:g} s", param="max_tokens",
                                          fix="ask for fewer tokens or raise AGENTSTACK_SERVER__REQUEST_TIMEOUT_S")
    finally:
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

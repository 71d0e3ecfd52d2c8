"""The one thread in this process that runs torch compute.

Why one thread: the CPU build of torch uses GNU OpenMP, which gives every calling thread its own team
of worker threads. As soon as the teams together hold more threads than there are CPUs, libgomp
switches every team to "throttled" spinning, and worker threads sleep between the many small
parallel regions of a decoder step. Measured here with SmolLM2 on 2 cores: 27 tok/s when one thread
runs the model, 16 tok/s for *every* thread once a second thread has run it. So the chat engine's
scheduler, the embedder and adapter merges all run on this worker, interleaved: one queued task,
then one step of each registered loop (the scheduler), and again.

Long work must be split into short tasks (the embedder submits one batch per task), so decoding
keeps stepping between them.

This is process-wide state on purpose: the constraint it manages is per process.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, Protocol, TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")


class Loop(Protocol):
    def has_work(self) -> bool: ...

    def step(self) -> None: ...


class ComputeWorker:
    def __init__(self, name: str = "agentstack-compute"):
        self._name = name
        self._tasks: deque[tuple[Future, Callable[..., Any], tuple, dict]] = deque()
        self._loops: list[Loop] = []
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None

    @property
    def in_worker(self) -> bool:
        return threading.current_thread() is self._thread

    def _ensure_started(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
            self._thread.start()

    def add_loop(self, loop: Loop) -> None:
        with self._cond:
            self._ensure_started()
            if loop not in self._loops:
                self._loops.append(loop)
            self._cond.notify_all()

    def remove_loop(self, loop: Loop) -> None:
        with self._cond:
            if loop in self._loops:
                self._loops.remove(loop)

    def wake(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def submit(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> "Future[T]":
        future: Future[T] = Future()
        with self._cond:
            self._ensure_started()
            self._tasks.append((future, fn, args, kwargs))
            self._cond.notify_all()
        return future

    def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run ``fn`` on the worker and wait (directly, if already on it)."""
        if self.in_worker:
            return fn(*args, **kwargs)
        return self.submit(fn, *args, **kwargs).result()

    async def arun(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return await asyncio.wrap_future(self.submit(fn, *args, **kwargs))

    def _busy(self) -> bool:
        return bool(self._tasks) or any(loop.has_work() for loop in self._loops)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._busy():
                    self._cond.wait()
                task = self._tasks.popleft() if self._tasks else None
                loops = list(self._loops)
            if task is not None:
                future, fn, args, kwargs = task
                if future.set_running_or_notify_cancel():
                    try:
                        future.set_result(fn(*args, **kwargs))
                    except BaseException as exc:  # delivered to the caller
                        future.set_exception(exc)
            for loop in loops:
                if loop.has_work():
                    try:
                        loop.step()
                    except Exception:  # a loop must handle its own errors; never kill the worker
                        log.exception("compute loop step failed")


_worker: ComputeWorker | None = None
_worker_lock = threading.Lock()


def worker() -> ComputeWorker:
    """The process-wide compute worker."""
    global _worker
    with _worker_lock:
        if _worker is None:
            _worker = ComputeWorker()
        return _worker

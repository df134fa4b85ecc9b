"""A bounded pool for CPU-bound work, so the event loop stays responsive.

``await pool.run(fn, *args)`` runs ``fn`` in a ``ThreadPoolExecutor`` with
``size`` workers (``config.cpu_worker_pool_size``) or, with ``kind="process"``, a
``ProcessPoolExecutor`` (``fn`` and its arguments must then be picklable). At most
``size`` calls run at once; the rest wait in the executor's queue. The executor is
created on first use and shut down by :meth:`WorkerPool.close`; the pipeline owns
one pool.

>>> import asyncio
>>> pool = WorkerPool(2)
>>> asyncio.run(pool.run(sum, [1, 2, 3]))
6
>>> pool.close()
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import functools
import threading
from collections.abc import Callable
from typing import Any, Literal, TypeVar

__all__ = ["PoolKind", "WorkerPool"]

T = TypeVar("T")
PoolKind = Literal["thread", "process"]


class WorkerPool:
    """A lazily created thread (or process) pool with ``size`` workers."""

    def __init__(self, size: int = 2, *, kind: PoolKind = "thread") -> None:
        if size < 1:
            raise ValueError(f"size={size!r} must be >= 1")
        if kind not in ("thread", "process"):
            raise ValueError(f"kind={kind!r} is not valid; valid values: thread, process")
        self.size = size
        self.kind: PoolKind = kind
        self._executor: cf.Executor | None = None
        self._lock = threading.Lock()
        self._closed = False
        self.active = 0
        self.max_active = 0  # the most calls seen running at once (for tests and reports)
        self.calls = 0  # calls submitted

    def _get(self) -> cf.Executor:
        with self._lock:
            if self._closed:
                raise RuntimeError("the worker pool is closed")
            if self._executor is None:
                if self.kind == "process":
                    self._executor = cf.ProcessPoolExecutor(max_workers=self.size)
                else:
                    self._executor = cf.ThreadPoolExecutor(
                        max_workers=self.size, thread_name_prefix="iterate-cpu"
                    )
            return self._executor

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run ``fn(*args, **kwargs)`` in the pool and await its result."""
        call = functools.partial(fn, *args, **kwargs) if kwargs else fn
        executor = self._get()
        self.calls += 1
        loop = asyncio.get_running_loop()
        if self.kind == "thread":
            return await loop.run_in_executor(executor, self._tracked, call, args if not kwargs else ())
        return await loop.run_in_executor(executor, call, *(args if not kwargs else ()))

    def _tracked(self, call: Callable[..., T], args: tuple[Any, ...]) -> T:
        with self._lock:
            self.active += 1
            self.max_active = max(self.max_active, self.active)
        try:
            return call(*args)
        finally:
            with self._lock:
                self.active -= 1

    def close(self, *, wait: bool = True) -> None:
        """Shut the executor down (idempotent)."""
        with self._lock:
            self._closed = True
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=wait, cancel_futures=True)

    async def aclose(self) -> None:
        await asyncio.to_thread(self.close)

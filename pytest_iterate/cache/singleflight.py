"""Single flight: identical keys in flight at the same time share one call.

The first caller of :meth:`SingleFlight.run` for a key starts ``factory()`` as a task;
callers arriving while it runs await the same task. Its result or its exception goes
to every waiter. The task is shielded: cancelling one waiter (a timeout in one test,
say) does not cancel the call the others are waiting for. Once the task is done the
key is forgotten, so nothing is remembered on failure (the cache stores successes).

>>> import asyncio
>>> async def demo():
...     sf, calls = SingleFlight(), []
...     async def fetch():
...         calls.append(1); await asyncio.sleep(0.01); return "answer"
...     out = await asyncio.gather(*(sf.run("k", fetch) for _ in range(5)))
...     return out, len(calls), sf.coalesced
>>> asyncio.run(demo())
(['answer', 'answer', 'answer', 'answer', 'answer'], 1, 4)
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

__all__ = ["SingleFlight"]

T = TypeVar("T")


class SingleFlight(Generic[T]):
    """Coalesces concurrent calls by key. One instance per event loop (per client)."""

    def __init__(self) -> None:
        self._inflight: dict[str, asyncio.Task[T]] = {}
        self.calls = 0  # factories actually started
        self.coalesced = 0  # callers that joined a call already in flight

    def in_flight(self, key: str) -> bool:
        return key in self._inflight

    async def run(self, key: str, factory: Callable[[], Awaitable[T]]) -> T:
        task = self._inflight.get(key)
        if task is None:
            task = asyncio.ensure_future(factory())
            self._inflight[key] = task
            self.calls += 1
            task.add_done_callback(lambda t: self._forget(key, t))
        else:
            self.coalesced += 1
        return await asyncio.shield(task)

    def _forget(self, key: str, task: asyncio.Task[Any]) -> None:
        if self._inflight.get(key) is task:
            del self._inflight[key]
        if not task.cancelled():
            task.exception()  # mark retrieved: all waiters may have gone away

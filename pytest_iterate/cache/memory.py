"""The memory tier: a size-bounded LRU with a TTL per entry and an injectable clock.

>>> now = [0.0]
>>> lru = MemoryLRU(2, clock=lambda: now[0])
>>> lru.put("a", 1, ttl_s=10); lru.put("b", 2); lru.put("c", 3)
>>> lru.get("a") is None, lru.get("c")
(True, 3)
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ["MemoryLRU"]

V = TypeVar("V")


class MemoryLRU(Generic[V]):
    """Least-recently-used map of at most ``max_entries`` values.

    ``put(..., ttl_s=None)`` keeps an entry until it is evicted; an expired entry reads
    as missing and is dropped when read. Not thread-safe: one event loop owns it.
    """

    def __init__(self, max_entries: int, *, clock: Callable[[], float] = time.monotonic) -> None:
        if max_entries < 1:
            raise ValueError(f"max_entries={max_entries!r} must be >= 1")
        self.max_entries = max_entries
        self._clock = clock
        self._data: OrderedDict[str, tuple[V, float | None]] = OrderedDict()

    def get(self, key: str) -> V | None:
        item = self._data.get(key)
        if item is None:
            return None
        value, expires_at = item
        if expires_at is not None and self._clock() >= expires_at:
            del self._data[key]
            return None
        self._data.move_to_end(key)
        return value

    def put(self, key: str, value: V, ttl_s: float | None = None) -> None:
        expires_at = None if ttl_s is None else self._clock() + ttl_s
        self._data[key] = (value, expires_at)
        self._data.move_to_end(key)
        while len(self._data) > self.max_entries:
            self._data.popitem(last=False)

    def delete(self, key: str) -> None:
        self._data.pop(key, None)

    def clear(self) -> None:
        self._data.clear()

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self.get(key) is not None

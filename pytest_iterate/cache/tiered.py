"""ResponseCache: the memory tier in front of the disk tier, with stats and metrics.

A lookup asks memory, then disk; a disk hit is promoted to memory. Every hit returns
a fresh :class:`LLMResponse` (the stored entry cannot be changed by a caller) with
``cache_tier`` ("memory" or "disk") and ``cache_key`` set. Lookups are counted per
tier in Python (:meth:`ResponseCache.stats`) and in
``iterate_cache_requests_total{tier,result}``.

What is stored: text, finish_reason, usage, model, chunks, chunk_times_s, texts and
the ``length`` warning of an answer cut at ``max_tokens`` (plain JSON on disk). What
is refused: partial responses the token guard made (truncate, split, shrink_output),
responses that report an error, and non-deterministic requests (neither temperature
0 nor a seed) unless ``config.cache_nondeterministic``. An answer the model stopped
at ``max_tokens`` is stored: it is the endpoint's deterministic answer to this very
request (``max_tokens`` is part of the key), and it replays still flagged
(``finish_reason="length"`` and its ``length`` warning, so a hit reads
``complete=False`` whichever layer answers it).
Errors and ``Busy`` are exceptions and never reach :meth:`ResponseCache.put`.

Disk reads stay on the event loop (about 10 us for a small entry, versus about
120 us for a hop through ``asyncio.to_thread``). Writes are behind the answer: ``put``
stores in memory at once (every later lookup in this process hits) and queues the disk
write; one writer thread commits the queued entries in batches, one SQLite transaction
each, so no request waits for a commit (at concurrency 10 the wait for one another's
commits was about 7 ms per request). :meth:`ResponseCache.flush` waits until every queued
entry is on disk; :meth:`~ResponseCache.aclose` and :meth:`~ResponseCache.close` flush
first, so closing a cache never loses an entry.

>>> import asyncio
>>> from pytest_iterate.client.config import IterateConfig
>>> cache = ResponseCache(IterateConfig(cache_dir="/nonexistent", cache_enabled=False))
>>> asyncio.run(cache.get("v1:abc")) is None, cache.enabled
(True, False)
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_iterate.cache.disk import DiskStore
from pytest_iterate.cache.memory import MemoryLRU
from pytest_iterate.client.types import GuardWarning, LLMRequest, LLMResponse, Usage

if TYPE_CHECKING:
    from pytest_iterate.client.config import IterateConfig
    from pytest_iterate.client.metrics import IterateMetrics

__all__ = ["CacheStats", "ResponseCache", "TierStats"]

log = logging.getLogger("pytest_iterate.cache")

_REFUSED_FINISH = frozenset({"error", "busy", "content_filter"})


@dataclass(frozen=True, slots=True)
class TierStats:
    hits: int = 0
    misses: int = 0

    @property
    def lookups(self) -> int:
        return self.hits + self.misses

    @property
    def hit_rate(self) -> float:
        return self.hits / self.lookups if self.lookups else 0.0

    def to_json(self) -> dict[str, Any]:
        return {"hits": self.hits, "misses": self.misses, "hit_rate": self.hit_rate}


@dataclass(frozen=True, slots=True)
class CacheStats:
    """Counts per tier; ``overall`` counts a lookup once (a hit in either tier, or a miss).

    ``disk`` only sees lookups that missed memory.
    """

    memory: TierStats
    disk: TierStats
    overall: TierStats
    stores: int = 0
    refused: int = 0
    corrupt: int = 0  # entries of the wrong shape found on disk (removed, read as misses)

    @property
    def hits(self) -> int:
        return self.overall.hits

    @property
    def misses(self) -> int:
        return self.overall.misses

    @property
    def hit_rate(self) -> float:
        return self.overall.hit_rate

    def to_json(self) -> dict[str, Any]:
        return {
            **self.overall.to_json(),
            "memory": self.memory.to_json(),
            "disk": self.disk.to_json(),
            "stores": self.stores,
            "refused": self.refused,
            "corrupt": self.corrupt,
        }


class ResponseCache:
    """Two-tier response cache configured by ``cache_*`` fields of :class:`IterateConfig`.

    ``cache_dir`` relative paths resolve against the current directory when the cache
    is made. ``clock`` (monotonic) drives memory TTLs, ``wall_clock`` disk TTLs.
    With ``cache_enabled=False`` every method is a cheap no-op and nothing touches disk.
    """

    def __init__(
        self,
        config: IterateConfig,
        metrics: IterateMetrics | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.enabled = config.cache_enabled
        self.ttl_s = config.cache_ttl_s
        self._metrics = metrics
        self._memory: MemoryLRU[dict[str, Any]] = MemoryLRU(config.cache_memory_size, clock=clock)
        self.folder = Path(config.cache_dir).resolve() if self.enabled else Path(config.cache_dir)
        self._disk = DiskStore(self.folder, wall_clock=wall_clock) if self.enabled else None
        self._wall_clock = wall_clock
        self._counts = {"memory_hit": 0, "memory_miss": 0, "disk_hit": 0, "disk_miss": 0}
        self._children: dict[str, Any] = {}  # labelled counters, looked up once
        if metrics is not None:
            for name in self._counts:
                tier, result = name.split("_")
                self._children[name] = metrics.cache_requests.labels(tier=tier, result=result)
        self._stores = 0
        self._refused = 0
        self._corrupt = 0
        # write-behind: entries waiting for the disk, the one writer thread, the batch it holds
        self._queued: dict[str, tuple[dict[str, Any], float]] = {}  # key: (payload, stored at)
        self._writer: concurrent.futures.ThreadPoolExecutor | None = None
        self._writing: concurrent.futures.Future[int] | None = None
        self._drainer: asyncio.Task[None] | None = None

    # -- policy ---------------------------------------------------------------
    def cacheable(self, request: LLMRequest) -> bool:
        """Whether answers to ``request`` may be stored (and identical calls coalesced)."""
        return self.enabled and (request.deterministic or self.config.cache_nondeterministic)

    # -- lookups --------------------------------------------------------------
    async def get(self, key: str, *, record: bool = True) -> LLMResponse | None:
        """The stored response for ``key`` as a fresh object, or None.

        ``record=False`` looks without counting (the single-flight re-check uses it).
        """
        if not self.enabled:
            return None
        payload = self._memory.get(key)
        if payload is not None:
            if record:
                self._count("memory_hit")
            return _response_from(payload, key, "memory")
        if record:
            self._count("memory_miss")
        assert self._disk is not None
        payload = self._disk.get(key)
        response = None if payload is None else self._checked(key, payload)
        if response is None:
            if record:
                self._count("disk_miss")
            return None
        assert payload is not None
        if record:
            self._count("disk_hit")
        self._memory.put(key, payload, self.ttl_s)
        return response

    def _checked(self, key: str, payload: dict[str, Any]) -> LLMResponse | None:
        """The response a stored payload describes, or None when it has the wrong shape: the
        entry is then removed and counted (``iterate_cache_corrupt_total``), never served."""
        try:
            return _response_from(payload, key, "disk")
        except (TypeError, ValueError, KeyError) as exc:
            log.warning(
                "disk cache entry %s has the wrong shape, removed and treated as a miss: %s", key, exc
            )
            assert self._disk is not None
            self._disk.delete(key)
            self._corrupt += 1
            if self._metrics is not None:
                self._metrics.cache_corrupt.inc()
            return None

    async def put(self, key: str, request: LLMRequest, response: LLMResponse) -> bool:
        """Store ``response`` under ``key`` if the policy allows; True when stored."""
        if not self.enabled:
            return False
        if (
            not self.cacheable(request)
            or _guarded(response)
            or response.finish_reason in _REFUSED_FINISH
            or response.cache_tier is not None
        ):
            self._refused += 1
            return False
        payload = _payload_of(response)
        self._memory.put(key, payload, self.ttl_s)
        self._queued[key] = (payload, self._wall_clock())
        if self._drainer is None or self._drainer.done():
            self._drainer = asyncio.get_running_loop().create_task(self._drain())
        self._stores += 1
        return True

    # -- the disk writer ------------------------------------------------------
    @property
    def pending_writes(self) -> int:
        """Entries stored in memory whose disk write has not finished yet."""
        return len(self._queued) + (0 if self._writing is None or self._writing.done() else 1)

    def _write_batch(self, batch: dict[str, tuple[dict[str, Any], float]]) -> int:
        assert self._disk is not None
        # A failed disk write is logged by the store; the memory tier holds the entry anyway.
        return self._disk.put_many(batch, self.ttl_s)

    def _submit(self) -> concurrent.futures.Future[int]:
        batch, self._queued = self._queued, {}
        if self._writer is None:
            self._writer = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="iterate-cache-writer")
        self._writing = self._writer.submit(self._write_batch, batch)
        return self._writing

    async def _drain(self) -> None:
        while self._queued:
            await asyncio.wrap_future(self._submit())

    async def flush(self) -> None:
        """Wait until every entry stored so far is on disk."""
        while self._drainer is not None and not self._drainer.done():
            await asyncio.shield(self._drainer)
        if self._queued:  # queued after the drainer ended (or its loop is gone)
            await asyncio.wrap_future(self._submit())

    def _flush_blocking(self) -> None:
        if self._writing is not None:
            with contextlib.suppress(Exception):
                self._writing.result()
        if self._queued:
            self._submit().result()
        if self._drainer is not None and not self._drainer.done():
            self._drainer.cancel()  # nothing left for it: the queue is empty

    # -- housekeeping ---------------------------------------------------------
    def stats(self) -> CacheStats:
        c = self._counts
        return CacheStats(
            memory=TierStats(c["memory_hit"], c["memory_miss"]),
            disk=TierStats(c["disk_hit"], c["disk_miss"]),
            overall=TierStats(c["memory_hit"] + c["disk_hit"], c["disk_miss"]),
            stores=self._stores,
            refused=self._refused,
            corrupt=self._corrupt,
        )

    def clear(self) -> None:
        """Drop every entry in both tiers (the counters are kept)."""
        self._memory.clear()
        if self._disk is not None:
            self._disk.clear()

    async def aclose(self) -> None:
        """Flush the queued disk writes, then close."""
        await self.flush()
        self.close()

    def close(self) -> None:
        """Write what is still queued (blocking), then close the disk tier."""
        self._flush_blocking()
        if self._writer is not None:
            self._writer.shutdown(wait=True)
            self._writer = None
        if self._disk is not None:
            self._disk.close()

    def _count(self, name: str) -> None:
        self._counts[name] += 1
        child = self._children.get(name)
        if child is not None:
            child.inc()


def _guarded(response: LLMResponse) -> bool:
    """True when the token guard changed the request (truncate, split, shrink_output...).

    A ``length`` stop alone does not count: the model stopping at ``max_tokens`` is the
    endpoint's deterministic answer to this very request (``max_tokens`` is in the key),
    so it is stored and replays still flagged as cut (``finish_reason="length"``).
    """
    return any(w.action != "length" for w in response.warnings)


def _payload_of(response: LLMResponse) -> dict[str, Any]:
    usage = response.usage
    payload: dict[str, Any] = {
        "text": response.text,
        "finish_reason": response.finish_reason,
        "usage": None if usage is None else [usage.prompt_tokens, usage.completion_tokens],
        "model": response.model,
        "chunks": list(response.chunks),
        "chunk_times_s": list(response.chunk_times_s),
        "texts": None if response.texts is None else list(response.texts),
    }
    if response.warnings:  # only ``length`` ones get here (see _guarded)
        payload["warnings"] = [w.to_json() for w in response.warnings]
    return payload


def _str_or_none(value: Any, name: str) -> str | None:
    if value is not None and not isinstance(value, str):
        raise TypeError(f"{name} is {type(value).__name__}, not a string")
    return value


def _strings(value: Any, name: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise TypeError(f"{name} is not a list of strings")
    return list(value)


def _seconds(value: Any, name: str) -> list[float]:
    if not isinstance(value, list) or not all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= 0 for v in value
    ):
        raise TypeError(f"{name} is not a list of times in seconds")
    return [float(v) for v in value]


def _usage(value: Any) -> Usage | None:
    if value is None:
        return None
    if (
        not isinstance(value, list)
        or len(value) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value)
    ):
        raise TypeError(f"usage is {value!r}, not [prompt_tokens, completion_tokens]")
    return Usage(value[0], value[1])


def _warnings_from(raw: Any) -> list[GuardWarning]:
    """The stored warnings; anything that is not a warning object is skipped."""
    if not raw:
        return []
    out: list[GuardWarning] = []
    for w in raw:
        if isinstance(w, dict) and isinstance(w.get("action"), str):
            out.append(
                GuardWarning(
                    w["action"],
                    str(w.get("message", "")),
                    tokens_before=_int_or_none(w.get("tokens_before")),
                    tokens_after=_int_or_none(w.get("tokens_after")),
                    removed=None if w.get("removed") is None else str(w["removed"]),
                )
            )
    return out


def _int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _response_from(payload: dict[str, Any], key: str, tier: str) -> LLMResponse:
    """The response a payload describes; TypeError/KeyError for a payload of the wrong shape
    (``{}``, ``"text": 5``, ``"usage": "lots"``...)."""
    texts = payload.get("texts")
    return LLMResponse(
        text=_str_or_none(payload["text"], "text") or "",
        finish_reason=_str_or_none(payload.get("finish_reason"), "finish_reason"),
        usage=_usage(payload.get("usage")),
        model=_str_or_none(payload.get("model"), "model"),
        ttft_s=0.0,
        total_s=0.0,
        attempts=1,
        chunks=_strings(payload.get("chunks", []), "chunks"),
        chunk_times_s=_seconds(payload.get("chunk_times_s", []), "chunk_times_s"),
        cache_tier=tier,
        cache_key=key,
        texts=None if texts is None else _strings(texts, "texts"),
        warnings=_warnings_from(payload.get("warnings")),
    )

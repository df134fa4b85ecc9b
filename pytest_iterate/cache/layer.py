"""CachingCaller: the cache as one layer of the call stack (a :class:`Caller`).

For each request: build its key; answer from the cache when it holds one (replaying
the stored chunks through ``on_delta`` so a streaming caller sees a stream); else, for
a cacheable request, join or start the one upstream call for that key (single flight)
and store a successful complete answer. Non-cacheable requests (non-deterministic,
cache disabled) go straight to the inner caller and are never coalesced: two samples
at temperature 1 must stay two samples.

Timings of a hit describe the hit: ``ttft_s`` and ``total_s`` are the time spent in
this layer, and ``chunk_times_s`` the replay offsets.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

from pytest_iterate.cache.keys import KeyBuilder
from pytest_iterate.cache.singleflight import SingleFlight
from pytest_iterate.cache.tiered import ResponseCache
from pytest_iterate.client.types import Caller, LLMRequest, LLMResponse

__all__ = ["CachingCaller"]

Delta = Callable[[str], None]


class CachingCaller:
    """Wraps ``inner`` with ``cache``; itself a :class:`Caller`.

    ``base_url`` and ``default_model`` are those of the client under ``inner``: they
    are part of every key.
    """

    def __init__(
        self,
        inner: Caller,
        cache: ResponseCache,
        *,
        base_url: str,
        default_model: str,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.inner = inner
        self.cache = cache
        self.base_url = base_url
        self.default_model = default_model
        self._key = KeyBuilder(base_url, default_model)
        self.single_flight: SingleFlight[tuple[LLMResponse, bool]] = SingleFlight()
        self._clock = clock

    def key_for(self, request: LLMRequest) -> str:
        return self._key(request)

    async def __call__(self, request: LLMRequest, /, *, on_delta: Delta | None = None) -> LLMResponse:
        cache = self.cache
        if not cache.enabled:
            return await self.inner(request, on_delta=on_delta)
        start = self._clock()
        key = self._key(request)
        hit = await cache.get(key)
        if hit is not None:
            return self._replay(hit, request, on_delta, start)
        if not cache.cacheable(request):
            response = await self.inner(request, on_delta=on_delta)
            response.cache_key = key
            return response

        led = False

        async def call_upstream() -> tuple[LLMResponse, bool]:
            nonlocal led
            again = await cache.get(key, record=False)  # stored while we looked it up?
            if again is not None:
                return again, False
            led = True
            response = await self.inner(request, on_delta=on_delta)
            response.cache_key = key
            await cache.put(key, request, response)
            return response, True

        response, fresh = await self.single_flight.run(key, call_upstream)
        if led and fresh:
            return response  # this caller made the call and saw its deltas live
        copy = _copy(response)  # every follower gets its own object
        if fresh:  # it did not see the leader's deltas: send them now
            _emit(copy, request, on_delta)
            return copy
        return self._replay(copy, request, on_delta, start)

    def _replay(
        self, hit: LLMResponse, request: LLMRequest, on_delta: Delta | None, start: float
    ) -> LLMResponse:
        times = _emit(hit, request, on_delta, clock=self._clock, start=start)
        end = self._clock()
        hit.total_s = end - start
        hit.ttft_s = times[0] if times else hit.total_s
        if request.stream:
            hit.chunk_times_s = times
        return hit


def _copy(response: LLMResponse) -> LLMResponse:
    return dataclasses.replace(
        response,
        chunks=list(response.chunks),
        chunk_times_s=list(response.chunk_times_s),
        warnings=list(response.warnings),
        texts=None if response.texts is None else list(response.texts),
        raw=None if response.raw is None else dict(response.raw),
    )


def _emit(
    response: LLMResponse,
    request: LLMRequest,
    on_delta: Delta | None,
    *,
    clock: Callable[[], float] | None = None,
    start: float = 0.0,
) -> list[float]:
    """Send the stored chunks (or the whole text) to ``on_delta``; the offsets of each."""
    pieces = response.chunks or ([response.text] if response.text else [])
    if request.stream and not response.chunks:
        response.chunks = list(pieces)
    times: list[float] = []
    if on_delta is None:
        return times
    for piece in pieces:
        on_delta(piece)
        if clock is not None:
            times.append(clock() - start)
    return times

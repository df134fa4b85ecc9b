"""CachingCaller: the cache as one layer of the call stack (a :class:`Caller`).

A user wraps what sits below it (a client, or a ``GuardingCaller`` around a client)::

    caller = CachingCaller(GuardingCaller(client, guard, endpoint_key=client.base_url),
                           cache, base_url=client.base_url, default_model=client.model)
    answer = await caller(request)

:class:`~pytest_iterate.pipeline.runner.Pipeline` builds this same stack and runs its
two phases as separate stages, so each is timed on its own; ``__call__`` is just
the two phases in a row:

:meth:`lookup`  (stage ``cache_lookup``) the request's key and, for a cacheable
                request, the stored answer, replaying its chunks through
                ``on_delta`` so a streaming caller sees a stream. The result is a
                :class:`CacheLookup`: the key, whether the request is cacheable,
                and the hit or None.
:meth:`fetch`   (stage ``llm_call``) the miss path. A cacheable request joins the
                one upstream call in flight for its key, or starts it (single
                flight): the call first looks in the cache again (another caller
                may have stored the answer meanwhile), else runs ``send()`` (the
                layer below) and stores a successful answer. A non-cacheable
                request (non-deterministic, or the cache disabled) is sent as it
                is, never coalesced and never stored: two samples at temperature 1
                must stay two samples. A caller that joined a call already in
                flight gets its own copy of the answer and ``CacheLookup.coalesced``.

What is stored is :meth:`ResponseCache.put`'s decision: errors and ``Busy`` are
exceptions and never get there; answers the token guard changed (truncate, split,
shrink_output) are refused; an answer cut at ``max_tokens`` is stored with its
``length`` warning and replays with it.

Timings of a hit describe the hit: ``ttft_s`` and ``total_s`` are the time spent in
this layer since the lookup began, and ``chunk_times_s`` the replay offsets.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from pytest_iterate.cache.keys import KeyBuilder
from pytest_iterate.cache.singleflight import SingleFlight
from pytest_iterate.cache.tiered import ResponseCache
from pytest_iterate.client.types import Caller, LLMRequest, LLMResponse

__all__ = ["CacheLookup", "CachingCaller"]

Delta = Callable[[str], None]
Send = Callable[[], Awaitable[LLMResponse]]


@dataclass(slots=True)
class CacheLookup:
    """One request's way through the cache: what :meth:`CachingCaller.lookup` found.

    ``hit`` is the stored answer (replayed) or None; ``coalesced`` turns True when
    :meth:`CachingCaller.fetch` joined an identical call already in flight (it stays
    set if that call fails, and is False when the answer came from the cache).
    """

    request: LLMRequest
    key: str
    cacheable: bool
    started: float  # the layer's clock when the lookup began
    hit: LLMResponse | None = None
    coalesced: bool = False


class CachingCaller:
    """Wraps ``inner`` with ``cache``; itself a :class:`Caller`.

    ``base_url`` and ``default_model`` are those of the client under ``inner``: they
    are part of every key. ``single_flight`` coalesces identical misses in flight.
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
        if not self.cache.enabled:
            return await self.inner(request, on_delta=on_delta)
        found = await self.lookup(request, on_delta=on_delta)
        if found.hit is not None:
            return found.hit

        def send() -> Awaitable[LLMResponse]:
            return self.inner(request, on_delta=on_delta)

        return await self.fetch(found, send, on_delta=on_delta)

    # -- the phases -------------------------------------------------------------------
    async def lookup(self, request: LLMRequest, *, on_delta: Delta | None = None) -> CacheLookup:
        """The key of ``request`` and, when it is cacheable, the stored answer replayed."""
        started = self._clock()
        cache = self.cache
        found = CacheLookup(request, self._key(request), cache.cacheable(request), started)
        if found.cacheable:
            hit = await cache.get(found.key)
            if hit is not None:
                found.hit = self._replay(hit, request, on_delta, started)
        return found

    async def fetch(self, found: CacheLookup, send: Send, *, on_delta: Delta | None = None) -> LLMResponse:
        """The answer to a missed lookup: ``send()`` once per key in flight, stored if allowed.

        ``send`` is the call to the layer below for ``found.request``, with ``on_delta``
        already bound: the caller that runs it sees its deltas live; a caller that
        joined gets them afterwards.
        """
        key, request = found.key, found.request
        if not found.cacheable:
            response = await send()
            response.cache_key = key
            return response
        cache = self.cache
        led = False

        async def call_upstream() -> tuple[LLMResponse, bool]:
            nonlocal led
            again = await cache.get(key, record=False)  # stored while we looked it up?
            if again is not None:
                return again, False
            led = True
            response = await send()
            response.cache_key = key
            await cache.put(key, request, response)
            return response, True

        found.coalesced = self.single_flight.in_flight(key)
        response, fresh = await self.single_flight.run(key, call_upstream)
        if led and fresh:
            return response  # this caller made the call and saw its deltas live
        copy = _copy(response)  # every follower gets its own object
        if fresh:  # it did not see the leader's deltas: send them now
            _emit(copy, request, on_delta)
            return copy
        found.coalesced = False  # answered by the cache after all
        return self._replay(copy, request, on_delta, found.started)

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
    if on_delta is None and not request.stream:
        return []
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

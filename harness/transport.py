"""What ``iterate-bench`` puts between the client and the wire: extra headers, and a count
of the requests on the wire.

:class:`InflightGauge` counts requests sent and not yet answered in full and keeps the
largest count seen (``peak``): the report's ``max_inflight``, the number that shows a
limit nobody asked for (a connection pool or a concurrency limit smaller than the load).
:class:`BenchTransport` wraps any client transport (aiohttp, httpx, a cassette): it adds
``headers`` to every request and counts each one from the send until its body is read,
its stream ends or it is closed. Header values are never shown (repr, reports, errors).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any

from pytest_iterate.client.transport.base import Transport, TransportResponse

__all__ = ["BenchTransport", "InflightGauge", "parse_header"]

_TOKEN = set("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


def parse_header(text: str) -> tuple[str, str]:
    """``"X-Team: search"`` -> ``("X-Team", "search")``; a ``ValueError`` names what is wrong
    (never the value: it may be a credential)."""
    name, sep, value = text.partition(":")
    name = name.strip()
    if not sep or not name:
        raise ValueError("a header is NAME:VALUE (e.g. X-Team:search); got one without a name and ':'")
    bad = sorted(set(name) - _TOKEN)
    if bad:
        raise ValueError(f"header name {name!r} holds characters a header name cannot: {''.join(bad)!r}")
    if any(ch in value for ch in "\r\n"):
        raise ValueError(f"the value of header {name!r} holds a line break")
    return name, value.strip()


class InflightGauge:
    """Requests in flight now (``current``) and the most at once since :meth:`reset` (``peak``)."""

    __slots__ = ("current", "peak")

    def __init__(self) -> None:
        self.current = 0
        self.peak = 0

    def enter(self) -> None:
        self.current += 1
        if self.current > self.peak:
            self.peak = self.current

    def exit(self) -> None:
        self.current -= 1

    def reset(self) -> int:
        """Start a new scenario: the peak restarts from the requests in flight now; returns the old peak."""
        old, self.peak = self.peak, self.current
        return old


class _CountedResponse:
    """A transport response that leaves the gauge once, however it ends."""

    __slots__ = ("_done", "_gauge", "_inner", "headers", "status")

    def __init__(self, inner: TransportResponse, gauge: InflightGauge) -> None:
        self._inner, self._gauge, self._done = inner, gauge, False
        self.status = inner.status
        self.headers = inner.headers

    def _leave(self) -> None:
        if not self._done:
            self._done = True
            self._gauge.exit()

    async def read(self) -> bytes:
        try:
            return await self._inner.read()
        finally:
            self._leave()

    async def iter_chunks(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._inner.iter_chunks():
                yield chunk
        finally:
            self._leave()

    async def aclose(self) -> None:
        try:
            await self._inner.aclose()
        finally:
            self._leave()


class BenchTransport:
    """``inner`` with ``headers`` added to every request, counted into ``gauge``."""

    def __init__(
        self,
        inner: Transport,
        *,
        headers: Mapping[str, str] | None = None,
        gauge: InflightGauge | None = None,
    ) -> None:
        self.inner = inner
        self.gauge = gauge if gauge is not None else InflightGauge()
        self._extra = dict(headers or {})
        # the client sends the same few header mappings: merge each once (keeps the inner
        # transport's own per-mapping conversion cache hitting)
        self._merged: dict[int, tuple[Mapping[str, str], dict[str, str]]] = {}

    def __repr__(self) -> str:
        return f"BenchTransport({self.inner!r}, headers={sorted(self._extra)})"  # names only

    @property
    def enforces_total_timeout(self) -> bool:
        return bool(getattr(self.inner, "enforces_total_timeout", False))

    def _headers(self, headers: Mapping[str, str]) -> Mapping[str, str]:
        if not self._extra:
            return headers
        hit = self._merged.get(id(headers))
        if hit is not None and hit[0] is headers:
            return hit[1]
        if len(self._merged) >= 16:
            self._merged.clear()
        merged = {**headers, **self._extra}
        self._merged[id(headers)] = (headers, merged)
        return merged

    async def send(
        self, method: str, url: str, *, headers: Mapping[str, str], **kwargs: Any
    ) -> TransportResponse:
        self.gauge.enter()
        try:
            response = await self.inner.send(method, url, headers=self._headers(headers), **kwargs)
        except BaseException:
            self.gauge.exit()
            raise
        return _CountedResponse(response, self.gauge)

    async def aclose(self) -> None:
        await self.inner.aclose()

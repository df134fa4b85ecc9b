"""The narrow wire interface under the client.

A transport sends one POST (or GET) with a JSON body and gives back the status, the
headers and either the whole body or an async iterator of raw byte chunks. It knows
nothing of OpenAI, retries or caching; it maps its library's errors into
:class:`~pytest_iterate.client.errors.ConnectError` and
:class:`~pytest_iterate.client.errors.RequestTimeout`.

Two implementations: :mod:`.aiohttp_transport` (the fast default for real endpoints)
and :mod:`.httpx_transport` (respx intercepts it; users can hand in their own
``httpx.AsyncClient``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any, Protocol, runtime_checkable

__all__ = ["Transport", "TransportResponse"]


@runtime_checkable
class TransportResponse(Protocol):
    """An answer whose body has not necessarily been read yet."""

    status: int
    headers: Mapping[str, str]  # case-insensitive lookups

    async def read(self) -> bytes:
        """The whole body. Raises RequestTimeout / ConnectError when it cannot be read."""
        ...

    def iter_chunks(self) -> AsyncIterator[bytes]:
        """The body as it arrives, in raw chunks (not split into lines)."""
        ...

    async def aclose(self) -> None:
        """Release the connection; safe to call twice."""
        ...


@runtime_checkable
class Transport(Protocol):
    async def send(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str],
        json_body: Any | None,
        timeout_s: float,
    ) -> TransportResponse:
        """Send and return once the status and headers are in."""
        ...

    async def aclose(self) -> None:
        """Close the connection pool (only the pool the transport created itself)."""
        ...

"""The narrow wire interface under the client.

A transport sends one POST (or GET) with a JSON body and gives back the status, the
headers and either the whole body or an async iterator of raw byte chunks. It knows
nothing of OpenAI, retries or caching; it maps its library's errors into
:class:`~pytest_iterate.client.errors.ConnectError` and
:class:`~pytest_iterate.client.errors.RequestTimeout`.

Two implementations: :mod:`.aiohttp_transport` (the fast default for real endpoints)
and :mod:`.httpx_transport` (respx intercepts it; users can hand in their own
``httpx.AsyncClient``).

Credentials: ``headers`` never hold one. ``auth`` is the ``Authorization`` value as a
:class:`~pytest_iterate.client.secret.Secret`; the transport that talks to the wire
adds the header itself, at the last moment, as
:meth:`~pytest_iterate.client.secret.Secret.header_value` (a ``str`` whose repr is
masked), so no frame of a traceback (the client's, the transport's or the HTTP
library's) shows the key. A transport that wraps another passes ``auth`` on.
Error messages name the URL through
:func:`~pytest_iterate.client.secret.redact_url`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from pytest_iterate.client.secret import Secret

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
        auth: Secret | None = None,
    ) -> TransportResponse:
        """Send and return once the status and headers are in; ``auth`` becomes ``Authorization``."""
        ...

    async def aclose(self) -> None:
        """Close the connection pool (only the pool the transport created itself)."""
        ...

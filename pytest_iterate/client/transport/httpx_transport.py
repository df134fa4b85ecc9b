"""The httpx transport: respx mocks intercept it, users can bring their own client.

``HttpxTransport()`` makes its own ``httpx.AsyncClient`` with explicit
``httpx.Limits`` (and closes it in :meth:`HttpxTransport.aclose`);
``HttpxTransport(client)`` uses the given client and never closes it. Responses are
streamed (``send(..., stream=True)``) so SSE bodies arrive chunk by chunk. httpx
errors are mapped to :class:`ConnectError` and :class:`RequestTimeout`.

The ``Authorization`` header is added inside :meth:`HttpxTransport.send` as a
:class:`~pytest_iterate.client.secret.MaskedStr`; httpx then keeps it in its
``Headers``, whose repr shows ``authorization`` as ``[secure]``.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING, Any

import httpx

from pytest_iterate.client.errors import ConnectError, RequestTimeout, TransportError
from pytest_iterate.client.secret import redact_url

if TYPE_CHECKING:
    from pytest_iterate.client.secret import Secret

__all__ = ["HttpxResponse", "HttpxTransport"]


def _map_error(
    exc: httpx.HTTPError, url: str, during: str, read_timeout_s: float | None = None
) -> TransportError:
    url = redact_url(url)
    if read_timeout_s is not None and isinstance(exc, httpx.ReadTimeout):
        return RequestTimeout(f"{url}: no data for {read_timeout_s:g}s ({during}; read_timeout_s)", url=url)
    if isinstance(exc, httpx.TimeoutException):
        return RequestTimeout(f"{url}: no answer within the timeout ({during})", url=url)
    return ConnectError(f"{url}: connection failed ({during}): {type(exc).__name__}", url=url)


class HttpxResponse:
    """A :class:`~pytest_iterate.client.transport.base.TransportResponse` over httpx."""

    __slots__ = ("_read_timeout_s", "_resp", "_url", "headers", "status")

    def __init__(self, resp: httpx.Response, url: str, read_timeout_s: float | None = None) -> None:
        self._resp = resp
        self.status = resp.status_code
        self.headers: Mapping[str, str] = resp.headers
        self._url = url
        self._read_timeout_s = read_timeout_s

    async def read(self) -> bytes:
        try:
            return await self._resp.aread()
        except httpx.HTTPError as exc:
            raise _map_error(exc, self._url, "reading the body", self._read_timeout_s) from exc
        finally:
            await self._resp.aclose()

    async def iter_chunks(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._resp.aiter_bytes():
                yield chunk
        except httpx.HTTPError as exc:
            raise _map_error(exc, self._url, "reading the stream", self._read_timeout_s) from exc
        finally:
            await self._resp.aclose()

    async def aclose(self) -> None:
        await self._resp.aclose()


class HttpxTransport:
    """httpx with explicit limits; a user-given ``client`` is used as is and not closed."""

    def __init__(
        self,
        client: httpx.AsyncClient | None = None,
        limits: httpx.Limits | None = None,
        *,
        connect_timeout_s: float = 5.0,
        read_timeout_s: float | None = None,
    ) -> None:
        self._owns = client is None
        self.connect_timeout_s = connect_timeout_s
        self.read_timeout_s = read_timeout_s
        self._client = client or httpx.AsyncClient(
            limits=limits or httpx.Limits(max_connections=100, max_keepalive_connections=100),
            trust_env=False,
        )
        self._timeouts: dict[float, httpx.Timeout] = {}

    @property
    def client(self) -> httpx.AsyncClient:
        return self._client

    def _timeout(self, timeout_s: float) -> httpx.Timeout:
        t = self._timeouts.get(timeout_s)
        if t is None:
            read = timeout_s if self.read_timeout_s is None else min(self.read_timeout_s, timeout_s)
            t = self._timeouts[timeout_s] = httpx.Timeout(
                timeout_s, connect=min(self.connect_timeout_s, timeout_s), read=read
            )
        return t

    async def send(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str],
        json_body: Any | None,
        timeout_s: float,
        auth: Secret | None = None,
    ) -> HttpxResponse:
        if json_body is None or isinstance(json_body, bytes):
            content = json_body
        else:
            content = json.dumps(json_body).encode()
        if auth is not None:
            headers = {**headers, "Authorization": auth.header_value()}
        try:
            request = self._client.build_request(
                method, url, headers=headers, content=content, timeout=self._timeout(timeout_s)
            )
            resp = await self._client.send(request, stream=True)
        except httpx.HTTPError as exc:
            raise _map_error(exc, url, "sending", self.read_timeout_s) from exc
        return HttpxResponse(resp, url, self.read_timeout_s)

    async def aclose(self) -> None:
        if self._owns:
            await self._client.aclose()

"""The fast default transport: aiohttp directly, one pooled session.

One ``aiohttp.ClientSession`` with a ``TCPConnector(limit=max_connections)`` is made
lazily inside the running event loop (a session is bound to its loop; if the
transport is used from a new loop, a new session is made there). Timeouts are
explicit: ``total`` is the per-attempt timeout given to :meth:`AiohttpTransport.send`,
``connect`` the configured connect timeout and ``sock_read`` the configured read
timeout (the longest silence allowed before the status line or the next chunk of a
stream). aiohttp and asyncio errors are mapped to :class:`ConnectError` and
:class:`RequestTimeout`, naming the URL and which bound fired.

The ``Authorization`` header is added inside :meth:`AiohttpTransport.send` as a
:class:`~pytest_iterate.client.secret.MaskedStr`: aiohttp keeps that very object in its
header mappings, so their repr in aiohttp's own frames shows ``'Bearer ***'``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp import hdrs
from multidict import CIMultiDict

from pytest_iterate.client.errors import ConnectError, RequestTimeout, TransportError
from pytest_iterate.client.secret import redact_url

if TYPE_CHECKING:
    from pytest_iterate.client.config import IterateConfig
    from pytest_iterate.client.secret import Secret

__all__ = ["AiohttpResponse", "AiohttpTransport"]


def _map_error(
    exc: BaseException, url: str, during: str, read_timeout_s: float | None = None
) -> TransportError:
    url = redact_url(url)
    if read_timeout_s is not None and isinstance(exc, aiohttp.SocketTimeoutError):
        return RequestTimeout(f"{url}: no data for {read_timeout_s:g}s ({during}; read_timeout_s)", url=url)
    if isinstance(exc, (asyncio.TimeoutError, aiohttp.ServerTimeoutError)):
        return RequestTimeout(f"{url}: no answer within the timeout ({during})", url=url)
    name = type(exc).__name__
    return ConnectError(f"{url}: connection failed ({during}): {name}", url=url)


class AiohttpResponse:
    """A :class:`~pytest_iterate.client.transport.base.TransportResponse` over aiohttp."""

    __slots__ = ("_read_timeout_s", "_resp", "_url", "headers", "status")

    def __init__(self, resp: aiohttp.ClientResponse, url: str, read_timeout_s: float | None = None) -> None:
        self._resp = resp
        self.status = resp.status
        self.headers: Mapping[str, str] = resp.headers
        self._url = url
        self._read_timeout_s = read_timeout_s

    async def read(self) -> bytes:
        try:
            return await self._resp.read()
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise _map_error(exc, self._url, "reading the body", self._read_timeout_s) from exc
        finally:
            self._resp.release()

    async def iter_chunks(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._resp.content.iter_any():
                yield chunk
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise _map_error(exc, self._url, "reading the stream", self._read_timeout_s) from exc
        finally:
            self._resp.release()

    async def aclose(self) -> None:
        self._resp.release()


class AiohttpTransport:
    """aiohttp with one connection pool of ``max_connections``.

    Give a ``config`` (``max_connections``, ``connect_timeout_s`` and ``read_timeout_s``
    are read from it) or the values directly. ``json_body`` may be pre-encoded ``bytes``.
    ``enforces_total_timeout``: aiohttp's ``total`` timeout covers the whole attempt,
    reading the body or stream included, so the client adds no timer of its own.
    """

    enforces_total_timeout = True

    def __init__(
        self,
        config: IterateConfig | None = None,
        *,
        max_connections: int | None = None,
        connect_timeout_s: float | None = None,
        read_timeout_s: float | None = None,
    ) -> None:
        self.max_connections = max_connections or (config.max_connections if config else 100)
        self.connect_timeout_s = connect_timeout_s or (config.connect_timeout_s if config else 5.0)
        self.read_timeout_s = read_timeout_s or (config.read_timeout_s if config else None)
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timeouts: dict[float, aiohttp.ClientTimeout] = {}

    def _get_session(self) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        session = self._session
        if session is None or session.closed or self._loop is not loop:
            connector = aiohttp.TCPConnector(limit=self.max_connections, limit_per_host=0)
            session = aiohttp.ClientSession(
                connector=connector,
                auto_decompress=True,
                raise_for_status=False,
                trust_env=False,
            )
            self._session = session
            self._loop = loop
        return session

    def _timeout(self, timeout_s: float) -> aiohttp.ClientTimeout:
        t = self._timeouts.get(timeout_s)
        if t is None:
            read = self.read_timeout_s
            t = self._timeouts[timeout_s] = aiohttp.ClientTimeout(
                total=timeout_s,
                connect=min(self.connect_timeout_s, timeout_s),
                sock_read=None if read is None else min(read, timeout_s),
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
    ) -> AiohttpResponse:
        session = self._session
        if session is None or self._loop is not asyncio.get_running_loop():
            session = self._get_session()
        if json_body is None or isinstance(json_body, bytes):
            data = json_body
        else:
            data = json.dumps(json_body).encode()
        prepared = CIMultiDict(headers)
        if auth is not None:
            prepared[hdrs.AUTHORIZATION] = auth.header_value()
        try:
            resp = await session.request(
                method, url, data=data, headers=prepared, timeout=self._timeout(timeout_s)
            )
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise _map_error(exc, url, "sending", self.read_timeout_s) from exc
        return AiohttpResponse(resp, url, self.read_timeout_s)

    async def aclose(self) -> None:
        session, self._session = self._session, None
        if session is not None and not session.closed:
            await session.close()

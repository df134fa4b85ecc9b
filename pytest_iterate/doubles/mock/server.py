"""The loopback front end: an aiohttp.web server on 127.0.0.1 over a :class:`MockLLM`.

Any client can talk to it (the official ``openai`` SDK, curl, other languages).
``GET /metrics`` serves the core's Prometheus registry; every other path goes to
the core, including the probes tools send before a run (``GET /health``,
``/version``, ``/v1/models``). A ``reset`` fault closes the
socket with ``SO_LINGER 0`` (the client sees a connection reset); a ``hang`` sends
nothing until the client gives up (the handler is cancelled when the client goes).

In the current loop::

    server = MockServer(MockLLM("fast"))
    await server.start()        # server.base_url == "http://127.0.0.1:PORT/v1"
    ...
    await server.stop()

In a background thread with its own loop (sync tests, the openai SDK's sync client,
benchmarks)::

    server = MockServer(MockLLM("fast")).start_in_thread()
    ...
    server.stop()
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from typing import Any

from aiohttp import web

from pytest_iterate._serving import Serving
from pytest_iterate.doubles.mock.core import MockLLM

__all__ = ["MockServer"]

_METRICS_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class MockServer(Serving):
    """Serve ``core`` over HTTP on ``host:port`` (port 0: the OS picks one).

    Without a core, one is built from ``profile`` (a name, a path or a
    :class:`~.profiles.LatencyProfile`; default ``"v1"``) and ``seed``. In the caller's
    loop (``async with``) or in a thread of its own (:meth:`start_in_thread`), see
    :class:`~pytest_iterate._serving.Serving`.
    """

    thread_name = "iterate-mock-server"

    def __init__(
        self,
        core: MockLLM | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        profile: Any = None,
        seed: int = 0,
    ) -> None:
        if core is None:
            core = MockLLM(profile if profile is not None else "v1", seed=seed)
        self.core = core
        self.host = host
        self.port = port

    def __repr__(self) -> str:
        return f"MockServer({self.core!r}, url={self.base_url if self._runner else None!r})"

    @property
    def base_url(self) -> str:
        """``http://HOST:PORT/v1`` once started."""
        if self._runner is None:
            raise RuntimeError("MockServer is not started")
        return f"http://{self.host}:{self.port}/v1"

    @property
    def url(self) -> str:
        """``http://HOST:PORT`` (where ``/metrics`` lives)."""
        return self.base_url[: -len("/v1")]

    # -- the app ------------------------------------------------------------------------
    def _app(self) -> web.Application:

        core = self.core

        async def metrics(request: web.Request) -> web.Response:
            return web.Response(body=core.exposition(), headers={"Content-Type": _METRICS_TYPE})

        async def handle(request: web.Request) -> web.StreamResponse:
            body = await request.read()
            reply = await core.handle(request.method, request.path, request.headers, body)
            if reply.fault is None and reply.chunks is None:
                return web.Response(status=reply.status, body=reply.body, headers=reply.headers)
            if reply.fault == "reset":
                _reset(request)
                raise asyncio.CancelledError  # nothing more to send on a dead socket
            if reply.fault == "hang":
                await asyncio.sleep(reply.hang_s)
                _reset(request)
                raise asyncio.CancelledError
            assert reply.chunks is not None
            resp = web.StreamResponse(status=reply.status, headers=reply.headers)
            resp.enable_chunked_encoding()
            chunks = reply.chunks
            try:
                await resp.prepare(request)
                async for chunk in chunks:
                    await resp.write(chunk)
                await resp.write_eof()
            finally:
                await chunks.aclose()  # type: ignore[attr-defined]
            return resp

        app = web.Application()
        app.router.add_get("/metrics", metrics)
        app.router.add_route("*", "/{tail:.*}", handle)
        return app

    # -- same loop ----------------------------------------------------------------------
    async def start(self) -> MockServer:
        """Start serving in the running loop; fills in ``port`` when it was 0."""
        await self._listen(self._app(), shutdown_timeout=0.5)
        return self

    async def _stop(self) -> None:
        await self._close()


def _reset(request: web.Request) -> None:
    """Drop the connection so the peer sees a reset (RST), not a clean close."""
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()

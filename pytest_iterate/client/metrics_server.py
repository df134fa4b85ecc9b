"""Serve ``GET /metrics`` from an :class:`IterateMetrics` registry over HTTP.

``serve_metrics`` starts a small aiohttp.web server in the running loop::

    server = await serve_metrics(metrics)          # port 0: the OS picks one
    print(server.url)                              # http://127.0.0.1:PORT/metrics
    await server.stop()

From synchronous code (a pytest session, a CLI) use :class:`ThreadedMetricsServer`,
which runs the same server in its own thread and event loop.
"""

from __future__ import annotations

import asyncio
import threading
from types import TracebackType
from typing import TYPE_CHECKING

from aiohttp import web

from pytest_iterate.client.metrics import CONTENT_TYPE_LATEST

if TYPE_CHECKING:
    from pytest_iterate.client.metrics import IterateMetrics

__all__ = ["MetricsServer", "ThreadedMetricsServer", "serve_metrics"]


class MetricsServer:
    """A running ``/metrics`` endpoint; ``url`` is the full URL of the metrics page."""

    def __init__(self, metrics: IterateMetrics, host: str = "127.0.0.1", port: int = 0) -> None:
        self.metrics = metrics
        self.host = host
        self.port = port
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/metrics"

    async def start(self) -> MetricsServer:

        metrics = self.metrics

        async def handle(_request: web.Request) -> web.Response:
            body = metrics.exposition()
            resp = web.Response(body=body)
            resp.headers["Content-Type"] = CONTENT_TYPE_LATEST
            return resp

        app = web.Application()
        app.router.add_get("/metrics", handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port)
        await site.start()
        server = getattr(site, "_server", None)
        sockets = getattr(server, "sockets", None) or ()
        if sockets:
            self.port = sockets[0].getsockname()[1]
        self._runner = runner
        return self

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> MetricsServer:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()


async def serve_metrics(metrics: IterateMetrics, host: str = "127.0.0.1", port: int = 0) -> MetricsServer:
    """Start serving ``GET /metrics`` in the running loop; returns the started server."""
    return await MetricsServer(metrics, host, port).start()


class ThreadedMetricsServer:
    """The same server in a daemon thread with its own loop, for synchronous callers.

    ``with ThreadedMetricsServer(metrics) as server: ... server.url ...``
    """

    def __init__(self, metrics: IterateMetrics, host: str = "127.0.0.1", port: int = 0) -> None:
        self._server = MetricsServer(metrics, host, port)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return self._server.url

    def start(self) -> ThreadedMetricsServer:
        loop = asyncio.new_event_loop()
        ready = threading.Event()
        errors: list[BaseException] = []

        def run() -> None:
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self._server.start())
            except BaseException as exc:  # reported to the starting thread
                errors.append(exc)
                ready.set()
                return
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self._server.stop())
            loop.close()

        self._loop = loop
        self._thread = threading.Thread(target=run, name="iterate-metrics", daemon=True)
        self._thread.start()
        ready.wait(10)
        if errors:
            raise errors[0]
        return self

    def stop(self) -> None:
        loop, thread = self._loop, self._thread
        self._loop = self._thread = None
        if loop is not None and thread is not None:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(10)

    def __enter__(self) -> ThreadedMetricsServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

"""A tiny OpenAI-shaped loopback server for measuring the harness itself.

``LoopbackServer(latency_s=0.05)`` answers ``POST /v1/chat/completions`` after a
fixed delay; ``stall_at_s``/``stall_s`` make every request that is in flight or
arrives in that window (measured from the first request) wait until the stall
ends, like a server that freezes. Used by tests, ``benchmarks/bench_harness.py``
and ``iterate-bench run --target loopback`` when the project mock is absent.

    async with LoopbackServer(latency_s=0.01) as srv:
        print(srv.base_url)   # http://127.0.0.1:PORT/v1
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from aiohttp import web

__all__ = ["LoopbackServer"]

_BODY = (
    b'{"id":"x","object":"chat.completion","model":"loopback","choices":[{"index":0,'
    b'"message":{"role":"assistant","content":"ok"},"finish_reason":"stop"}],'
    b'"usage":{"prompt_tokens":5,"completion_tokens":1,"total_tokens":6}}'
)


class LoopbackServer:
    """aiohttp.web on 127.0.0.1, port 0 (OS-assigned)."""

    def __init__(
        self,
        latency_s: float = 0.0,
        *,
        stall_at_s: float | None = None,
        stall_s: float = 0.0,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.latency_s, self.stall_at_s, self.stall_s = latency_s, stall_at_s, stall_s
        self.host, self.port = host, port
        self.requests = 0
        self._first: float | None = None
        self._runner: Any = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    async def _handle(self, request: Any) -> Any:

        await request.read()
        now = time.monotonic()
        if self._first is None:
            self._first = now
        self.requests += 1
        if self.latency_s > 0:
            await asyncio.sleep(self.latency_s)
        if self.stall_at_s is not None:
            stall_start = self._first + self.stall_at_s
            stall_end = stall_start + self.stall_s
            t = time.monotonic()
            if stall_start <= t < stall_end:
                await asyncio.sleep(stall_end - t)
        return web.Response(body=_BODY, content_type="application/json")

    async def start(self) -> LoopbackServer:

        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._handle)
        app.router.add_post("/v1/completions", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, self.port).start()
        self.port = int(self._runner.addresses[0][1])
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> LoopbackServer:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

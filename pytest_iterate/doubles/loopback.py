"""A tiny OpenAI-shaped loopback server for measuring the harness itself.

``LoopbackServer(latency_s=0.05)`` answers ``POST /v1/chat/completions`` (and
``/v1/completions``) after a fixed delay; a body asking ``"stream": true`` gets the
answer as Server-Sent Events (``stream_tokens`` chunks ``stream_gap_s`` apart, usage,
``[DONE]``). ``stall_at_s``/``stall_s`` make every request that is in flight or
arrives in that window (measured from the first request) wait until the stall
ends, like a server that freezes. ``last_headers`` and ``last_body`` keep the latest
request's headers and raw body (for tests of what a client sends). Used by tests,
``benchmarks/bench_harness.py`` and ``iterate-bench run --target loopback``.

    async with LoopbackServer(latency_s=0.01) as srv:
        print(srv.base_url)   # http://127.0.0.1:PORT/v1
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from aiohttp import web

__all__ = ["LoopbackServer"]

_STREAM_HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
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
        stream_tokens: int = 4,
        stream_gap_s: float = 0.0,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.latency_s, self.stall_at_s, self.stall_s = latency_s, stall_at_s, stall_s
        self.stream_tokens, self.stream_gap_s = stream_tokens, stream_gap_s
        self.host, self.port = host, port
        self.requests = 0
        self.last_headers: dict[str, str] = {}
        self.last_body = b""
        self._first: float | None = None
        self._runner: Any = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    async def _handle(self, request: Any) -> Any:

        body = await request.read()
        self.last_headers, self.last_body = dict(request.headers), body
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
        if b'"stream":true' in body.replace(b" ", b""):
            return await self._stream(request)
        return web.Response(body=_BODY, content_type="application/json")

    async def _stream(self, request: Any) -> Any:
        from aiohttp import web

        resp = web.StreamResponse(headers=_STREAM_HEADERS)
        await resp.prepare(request)
        chunk = (
            b'data: {"id":"x","object":"chat.completion.chunk",'
            b'"choices":[{"index":0,"delta":{"content":"ok"}}]}\n\n'
        )
        for i in range(self.stream_tokens):
            if i and self.stream_gap_s > 0:
                await asyncio.sleep(self.stream_gap_s)
            await resp.write(chunk)
        usage = (
            b'data: {"id":"x","object":"chat.completion.chunk","choices":[],"usage":{"prompt_tokens":5,'
            b'"completion_tokens":%d,"total_tokens":%d}}\n\n' % (self.stream_tokens, self.stream_tokens + 5)
        )
        await resp.write(usage + b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp

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

"""PipelineService: the cached, guarded, retrying, rate-aware pipeline as an OpenAI-compatible server.

Any client (the openai SDK, curl, a load tool) sends its requests here instead of to
the upstream endpoint; each goes through :attr:`Pipeline.caller
<pytest_iterate.pipeline.runner.Pipeline.caller>`: the response cache (a repeat is
answered from memory or disk, identical requests in flight share one call), the
token guard, the batch collector when ``batch_size > 1``, and the client's retry and
throttle, which paces the sends to the upstream's rate limits.

Routes (``/v1`` prefix optional):

    POST /v1/chat/completions, /v1/completions   the answer, whole or streamed (SSE);
                                                 ``iterate`` in the body (and the
                                                 ``X-Iterate-Cache`` header) says where
                                                 it came from and what the guard did
    GET  /v1/models                              the model the service sends to
    GET  /health                                 ``{"status": "ok", ...}`` and the throttle's state
    GET  /metrics                                the pipeline's Prometheus registry, with
                                                 ``iterate_service_responses_total{route,status}``
                                                 and ``iterate_service_response_seconds{route}``

When the service is saturated (every throttle slot busy and ``max_queue`` callers
waiting, for a slot or for the upstream's rate-limit budget) it answers at once
``503`` with ``Retry-After`` (whole seconds) and ``retry-after-ms`` (milliseconds),
which the openai SDK honours. Errors use OpenAI's error body (see
:func:`~pytest_iterate.service.protocol.error_for`).

In the running loop::

    async with PipelineService(config) as service:   # service.base_url: http://127.0.0.1:PORT/v1
        ...

From synchronous code (the openai SDK's sync client, a CLI)::

    service = PipelineService(config).start_in_thread()
    ...
    service.stop()

The service builds its pipeline (``Pipeline.from_config``) in the loop it serves from
and closes it on stop; a pipeline passed in is used as it is and left open. It binds
127.0.0.1 by default and does not authenticate its clients: the upstream's key (from
``api_key_env``) stays in the service.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import TYPE_CHECKING, Any

from aiohttp import web
from prometheus_client import Counter, Histogram

from pytest_iterate._serving import Serving
from pytest_iterate.client.config import IterateConfig
from pytest_iterate.client.metrics import CONTENT_TYPE_LATEST
from pytest_iterate.client.types import Endpoint, LLMRequest
from pytest_iterate.pipeline.runner import Pipeline
from pytest_iterate.service.protocol import (
    DONE,
    InvalidRequest,
    StreamIds,
    chunk,
    completion_body,
    error_for,
    parse_request,
)

if TYPE_CHECKING:
    pass

__all__ = ["PipelineService"]

_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_JSON = {"Content-Type": "application/json"}


class PipelineService(Serving):
    """Serve a pipeline over HTTP on ``host:port`` (port 0: the OS picks one), in the
    caller's loop or a thread of its own (see :class:`~pytest_iterate._serving.Serving`)."""

    thread_name = "iterate-pipeline-service"
    start_timeout_s = 60.0
    stop_timeout_s = 30.0

    def __init__(
        self,
        config: IterateConfig,
        *,
        pipeline: Pipeline | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.config = config
        self.host = host
        self.port = port
        self._given = pipeline
        self._pipeline: Pipeline | None = pipeline
        self._responses: Counter | None = None
        self._seconds: Histogram | None = None

    def __repr__(self) -> str:
        return (
            f"PipelineService(upstream={self.config.base_url!r}, url={self.url if self._runner else None!r})"
        )

    @property
    def pipeline(self) -> Pipeline:
        if self._pipeline is None:
            raise RuntimeError("the service is not started")
        return self._pipeline

    @property
    def url(self) -> str:
        """``http://HOST:PORT`` once started."""
        if self._runner is None:
            raise RuntimeError("the service is not started")
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        """``http://HOST:PORT/v1``: what an OpenAI client takes as its base URL."""
        return self.url + "/v1"

    # -- handlers ---------------------------------------------------------------------
    def _app(self) -> web.Application:
        app = web.Application(client_max_size=16 * 1024 * 1024)
        for prefix in ("/v1", ""):
            app.router.add_post(f"{prefix}/chat/completions", self._chat)
            app.router.add_post(f"{prefix}/completions", self._completions)
            app.router.add_get(f"{prefix}/models", self._models)
        app.router.add_get("/health", self._health)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_route("*", "/{tail:.*}", self._not_found)
        return app

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        return await self._complete(request, "chat")

    async def _completions(self, request: web.Request) -> web.StreamResponse:
        return await self._complete(request, "completions")

    async def _complete(self, http: web.Request, route: Endpoint) -> web.StreamResponse:
        started = time.perf_counter()
        pipeline = self.pipeline
        try:
            try:
                data = json.loads(await http.read() or b"null")
            except ValueError:
                raise InvalidRequest("We could not parse the JSON body of your request.") from None
            request = parse_request(route, data)
            if request.stream:
                include_usage = bool((data.get("stream_options") or {}).get("include_usage"))
                return await self._stream(http, request, include_usage, started)
            response = await pipeline.caller(request)
        except Exception as exc:
            return self._error(route, exc, started)
        body = completion_body(request, response, pipeline.services.model)
        self._count(route, 200, started)
        headers = {**_JSON, "X-Iterate-Cache": response.cache_tier or "miss"}
        return web.Response(status=200, body=json.dumps(body).encode(), headers=headers)

    async def _stream(
        self, http: web.Request, request: LLMRequest, include_usage: bool, started: float
    ) -> web.StreamResponse:
        """Stream the answer as it comes; an error before the first delta is a plain error answer."""
        route = request.endpoint
        deltas: asyncio.Queue[str | None] = asyncio.Queue()
        task = asyncio.ensure_future(self.pipeline.caller(request, on_delta=deltas.put_nowait))
        task.add_done_callback(lambda _t: deltas.put_nowait(None))
        try:
            first = await deltas.get()
            if first is None and task.exception() is not None:
                exc = task.exception()
                assert exc is not None
                return self._error(route, exc, started)
            ids = StreamIds.new(request, self.pipeline.services.model)
            resp = web.StreamResponse(
                status=200, headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
            )
            await resp.prepare(http)
            delta = first
            while delta is not None:
                await resp.write(chunk(request, ids, delta=delta))
                delta = await deltas.get()
            failure = task.exception()
            if failure is not None:  # cut after some text: an error event, as OpenAI sends
                await resp.write(b"data: " + error_for(failure).encoded() + b"\n\n")
                self._count(route, error_for(failure).status, started)
            else:
                response = task.result()
                await resp.write(chunk(request, ids, finish_reason=response.finish_reason or "stop"))
                if include_usage:
                    await resp.write(chunk(request, ids, response=response, usage_only=True))
                self._count(route, 200, started)
            await resp.write(DONE)
            await resp.write_eof()
            return resp
        finally:
            if not task.done():
                task.cancel()

    def _error(self, route: str, exc: BaseException, started: float) -> web.Response:
        reply = error_for(exc)
        self._count(route, reply.status, started)
        return web.Response(status=reply.status, body=reply.encoded(), headers={**_JSON, **reply.headers})

    async def _models(self, _request: web.Request) -> web.Response:
        model = self.pipeline.services.model
        body = {
            "object": "list",
            "data": [{"id": model, "object": "model", "created": 0, "owned_by": "upstream"}],
        }
        return web.json_response(body)

    async def _health(self, _request: web.Request) -> web.Response:
        pipeline = self.pipeline
        throttle = getattr(pipeline.client, "throttle", None)
        body: dict[str, Any] = {
            "status": "ok",
            "upstream": pipeline.services.base_url,
            "model": pipeline.services.model,
        }
        if throttle is not None:
            body.update(
                inflight=throttle.inflight, waiting=throttle.waiting, rate_wait_s=throttle.blocked_for_s
            )
        return web.json_response(body)

    async def _metrics(self, _request: web.Request) -> web.Response:
        return web.Response(
            body=self.pipeline.metrics.exposition(), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    async def _not_found(self, request: web.Request) -> web.Response:
        body = {
            "error": {
                "message": f"Unknown path {request.method} {request.path!r}",
                "type": "invalid_request_error",
                "param": None,
                "code": "not_found",
            }
        }
        return web.Response(status=404, body=json.dumps(body).encode(), headers=_JSON)

    def _count(self, route: str, status: int, started: float) -> None:
        if self._responses is not None and self._seconds is not None:
            self._responses.labels(route, str(status)).inc()
            self._seconds.labels(route).observe(time.perf_counter() - started)

    # -- lifecycle --------------------------------------------------------------------
    async def start(self) -> PipelineService:
        """Build the pipeline (unless given) and serve in the running loop; fills in ``port``."""
        if self._pipeline is None:
            self._pipeline = Pipeline.from_config(self.config)
        registry = self._pipeline.metrics.registry
        if self._responses is None:
            self._responses = Counter(
                "iterate_service_responses",
                "Answers of the HTTP service by route and status",
                ["route", "status"],
                registry=registry,
            )
            self._seconds = Histogram(
                "iterate_service_response_seconds",
                "Time the HTTP service took to answer (whole answers; streams until their end)",
                ["route"],
                buckets=_BUCKETS,
                registry=registry,
            )
        await self._listen(self._app(), shutdown_timeout=1.0)
        return self

    async def _stop(self) -> None:
        await self._close()
        if self._given is None and self._pipeline is not None:
            pipeline, self._pipeline = self._pipeline, None
            await pipeline.aclose()

    def start_in_thread(self) -> PipelineService:
        """Serve from a daemon thread with its own event loop; returns once listening."""
        if self._given is not None:
            raise RuntimeError("a pipeline passed in belongs to its own loop: use `async with` there")
        return super().start_in_thread()

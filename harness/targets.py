"""What ``iterate-bench run`` sends to: the pipeline, or bare HTTP, on an opened endpoint.

:func:`open_target` opens the endpoint (:mod:`pytest_iterate.endpoint`: the loopback
mock, the in-process mock, a neutral loopback server or a real URL) and yields a
:class:`Target`: a ``send(item)`` coroutine, the items to send, a gauge of the
requests on the wire and a description for the report.

Pipeline mode (the default): a design runs the whole design pipeline
(:meth:`Pipeline.run <pytest_iterate.pipeline.runner.Pipeline.run>`); a prompt, chat or
synthetic request goes through the pipeline's cache, token guard and client
(:attr:`Pipeline.caller <pytest_iterate.pipeline.runner.Pipeline.caller>`). The
client's transport is wrapped in a :class:`~pytest_iterate.harness.transport.BenchTransport`
(extra headers, the in-flight count). Raw mode (``raw=True``): one bare aiohttp POST
per item, its body encoded once before the run; no cache, guard, retry or throttle.
Without a workload, pipeline mode sends the standard design workload.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from pytest_iterate.client.client import LLMClient
from pytest_iterate.client.config import IterateConfig
from pytest_iterate.client.errors import ConfigError, error_for_status
from pytest_iterate.client.metrics import IterateMetrics
from pytest_iterate.client.secret import redact_url
from pytest_iterate.client.sse import StreamDecoder
from pytest_iterate.client.transport.base import Transport
from pytest_iterate.client.types import LLMRequest
from pytest_iterate.endpoint import Endpoint, EndpointSpec, open_endpoint
from pytest_iterate.harness.runner import Outcome
from pytest_iterate.harness.transport import BenchTransport, InflightGauge
from pytest_iterate.harness.workloads import Workload, default_workload
from pytest_iterate.pipeline.design import DesignRequest
from pytest_iterate.pipeline.prompts import PromptBuilder
from pytest_iterate.tokens.counter import load_encoding

__all__ = ["SendOptions", "Target", "open_target"]

Info = dict[str, str | int | float | bool | None]


@dataclass(frozen=True, slots=True)
class SendOptions:
    """How requests are sent: ``raw`` HTTP or the pipeline, streamed or not, extra headers."""

    raw: bool = False
    stream: bool = False
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class Target:
    send: Callable[[Any], Awaitable[Any]]
    items: list[Any]
    info: Info = field(default_factory=dict)
    gauge: InflightGauge = field(default_factory=InflightGauge)


class _Masked(str):
    """A header value whose repr is masked (an API key must not show in a traceback's locals)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "'***'"


class _BenchBuilder(PromptBuilder):
    """The design pipeline's prompt builder, asking for a streamed answer when told to."""

    def __init__(self, *, stream: bool, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._stream = stream

    def build(self, design: DesignRequest) -> LLMRequest:
        request = super().build(design)
        return request.replace(stream=True) if self._stream else request


def _inner_transport(endpoint: Endpoint, config: IterateConfig) -> Transport:
    """The endpoint's shared transport (a cassette), else the one the config names."""
    if endpoint.transport is not None:
        return endpoint.transport
    # each transport module imports its HTTP library: import only the one in use, as the client does
    if config.transport == "httpx":
        import httpx

        from pytest_iterate.client.transport.httpx_transport import HttpxTransport

        limits = httpx.Limits(
            max_connections=config.max_connections, max_keepalive_connections=config.max_connections
        )
        return HttpxTransport(
            limits=limits, connect_timeout_s=config.connect_timeout_s, read_timeout_s=config.read_timeout_s
        )
    from pytest_iterate.client.transport.aiohttp_transport import AiohttpTransport

    return AiohttpTransport(config)


@contextlib.asynccontextmanager
async def open_target(
    spec: EndpointSpec,
    workload: Workload | None = None,
    *,
    config_overrides: Mapping[str, Any] | None = None,
    options: SendOptions = SendOptions(),
) -> AsyncIterator[Target]:
    """Open the endpoint of ``spec`` and yield a :class:`Target` sending ``workload``."""
    if options.raw and spec.target == "inprocess":
        raise ConfigError("--raw needs a real socket; the in-process mock only serves the pipeline's client")
    async with open_endpoint(spec) as endpoint:
        config = IterateConfig.load(endpoint.config_values(**dict(config_overrides or {})))
        info: Info = {
            "target": endpoint.label,
            "base_url": redact_url(endpoint.base_url),
            "mode": "raw" if options.raw else "pipeline",
            "model": config.model,
            "stream": options.stream,
            "max_concurrent_requests": None if options.raw else config.max_concurrent_requests,
            "max_connections": config.max_connections,
        }
        if options.headers:
            info["headers"] = ", ".join(sorted(options.headers))  # names only: values may be credentials
        workload = workload if workload is not None else default_workload()
        info.update(workload.describe())
        if options.raw:
            async with _raw_target(endpoint, config, workload, options, info) as target:
                yield target
            return
        info["cache_enabled"] = config.cache_enabled
        if config.cache_enabled:
            info["cache_dir"] = config.cache_dir
        gauge = InflightGauge()
        metrics = IterateMetrics()
        inner = _inner_transport(endpoint, config)
        transport = BenchTransport(inner, headers=options.headers, gauge=gauge)
        client = LLMClient(config, transport=transport, metrics=metrics)
        parts: dict[str, Any] = {"client": client, "metrics": metrics}
        if workload.kind == "design" and options.stream:
            parts["builder"] = _BenchBuilder(stream=True, default_max_tokens=config.default_max_tokens)
        load_encoding()  # the token guard's encoding, loaded now rather than inside the first request
        try:
            async with endpoint.pipeline(config, **parts) as pipeline:
                send = pipeline.run if workload.kind == "design" else pipeline.caller
                yield Target(send=send, items=workload.items, info=info, gauge=gauge)
        finally:
            await client.aclose()
            if inner is not endpoint.transport:
                await inner.aclose()


def _requests(workload: Workload, config: IterateConfig, stream: bool) -> list[LLMRequest]:
    """The workload's requests (a design's as the pipeline builds it)."""
    if workload.kind == "design":
        builder = _BenchBuilder(stream=stream, default_max_tokens=config.default_max_tokens)
        return [builder.build(d) for d in workload.designs]
    return list(workload.requests)


def _usage(data: Mapping[str, Any]) -> tuple[int, int]:
    usage = data.get("usage") or {}
    if not isinstance(usage, Mapping):
        return 0, 0
    return int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)


@contextlib.asynccontextmanager
async def _raw_target(
    endpoint: Endpoint, config: IterateConfig, workload: Workload, options: SendOptions, info: Info
) -> AsyncIterator[Target]:
    """One POST per item over a shared aiohttp session: measures the endpoint and the wire only."""
    requests = _requests(workload, config, options.stream)
    url = endpoint.base_url + requests[0].path  # one kind of request per workload
    bodies = [json.dumps(r.body(config.model), separators=(",", ":")).encode() for r in requests]
    headers = {"Content-Type": "application/json", **options.headers}
    key = config.api_key
    if key:
        reveal = getattr(key, "reveal", None)  # a Secret where the client masks keys itself
        headers["Authorization"] = _Masked("Bearer " + (reveal() if callable(reveal) else str(key)))
    del key
    gauge = InflightGauge()
    clock = time.perf_counter
    connector = aiohttp.TCPConnector(limit=config.max_connections, limit_per_host=0)
    timeout = aiohttp.ClientTimeout(total=config.request_timeout_s, connect=config.connect_timeout_s)
    async with aiohttp.ClientSession(
        connector=connector, headers=headers, timeout=timeout, trust_env=False
    ) as session:

        async def send(body: bytes) -> Outcome:
            start = clock()
            gauge.enter()
            try:
                async with session.post(url, data=body) as resp:
                    if resp.status >= 400:
                        raise error_for_status(resp.status, url=url, body=await resp.read())
                    if not options.stream:
                        prompt, completion = _usage(json.loads(await resp.read()))
                        return Outcome(prompt_tokens=prompt, completion_tokens=completion)
                    return await _read_stream(resp, start, clock)
            finally:
                gauge.exit()

        yield Target(send=send, items=bodies, info=info, gauge=gauge)


async def _read_stream(resp: aiohttp.ClientResponse, start: float, clock: Callable[[], float]) -> Outcome:
    """Time the first and the last content chunk of an SSE answer; tokens from its usage."""
    decoder = StreamDecoder(url=str(resp.url))
    first = last = None
    chunks = 0
    prompt = completion = 0
    async for raw in resp.content.iter_any():
        for event in decoder.feed(raw):
            for choice in event.get("choices") or ():
                delta = choice.get("delta") or {}
                if delta.get("content") or choice.get("text"):
                    last = clock() - start
                    first = last if first is None else first
                    chunks += 1
            if event.get("usage"):
                prompt, completion = _usage(event)
    decoder.close()
    return Outcome(
        ttft_s=first, last_token_s=last, prompt_tokens=prompt, completion_tokens=completion or chunks
    )

"""The async client for OpenAI-compatible ``/chat/completions`` and ``/completions``.

The call stack, outermost first, each layer a
:class:`~pytest_iterate.client.types.Caller`:

    LLMClient.call        telemetry: request count/outcome, duration, TTFT, tokens;
                          one X-Client-Request-Id for the logical call
      RetryingCaller      retry policy (see :mod:`.retry`), attempts recorded; hands
                          every attempt the same request id
        throttled call    one throttle slot per attempt, sent when the endpoint's
                          rate-limit budgets hold it (see :mod:`.throttle`)
          raw_call        one HTTP attempt: send, check status, parse JSON or SSE;
                          the answer's rate-limit headers go to the throttle

``raw_call`` is exposed so other layers (cache, token guard) can wrap the bare
attempt. The wire goes through a :class:`~.transport.base.Transport`: aiohttp by
default, httpx when ``config.transport == "httpx"`` (what respx intercepts); a
transport passed in wins.

Timings: ``raw_call`` measures ``ttft_s`` (first content delta; the whole answer for
a non-streamed call), ``total_s`` and ``chunk_times_s`` from its own send;
:meth:`LLMClient.call` then moves ``ttft_s`` and ``total_s`` to count from the start of
the call, so retries, backoff and queueing are included.

Credentials: the API key is read once from ``config.api_key_env`` as a
:class:`~pytest_iterate.client.secret.Secret` and handed to the transport as ``auth``
(``Bearer <key>``); user information in ``base_url`` (``http://user:pw@host/v1``)
becomes Basic auth the same way and leaves the URL. No frame on the call path holds
the key as a plain string, the headers passed around never hold it, and the URLs the
client shows or stores (``base_url``, repr, error messages) are redacted. An echo of
the key in an error body is masked.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any

from pytest_iterate.client.errors import (
    BadResponse,
    Busy,
    ClientError,
    ConfigError,
    ConnectError,
    HTTPStatusError,
    IterateError,
    RateLimited,
    RequestTimeout,
    ServerError,
)
from pytest_iterate.client.metrics import IterateMetrics
from pytest_iterate.client.pacing import Ticket, estimate_tokens
from pytest_iterate.client.retry import RetryingCaller, RetryPolicy
from pytest_iterate.client.secret import Secret, redact_url, split_credentials
from pytest_iterate.client.throttle import Throttle
from pytest_iterate.client.types import Caller, LLMRequest, LLMResponse
from pytest_iterate.client.wire import (
    REQUEST_ID_HEADER,
    Reply,
    StreamAccumulator,
    encode_body,
    new_request_id,
    parse_body,
)

if TYPE_CHECKING:
    from pytest_iterate.client.config import IterateConfig
    from pytest_iterate.client.transport.base import Transport, TransportResponse

__all__ = ["LLMClient", "ResponseStream", "make_transport", "outcome_label"]

OnDelta = Callable[[str], None]
_NO_TIMEOUT = contextlib.nullcontext()

_OUTCOMES: tuple[tuple[type[BaseException], str], ...] = (
    (RateLimited, "rate_limited"),
    (ServerError, "server_error"),
    (ClientError, "client_error"),
    (HTTPStatusError, "http_error"),
    (RequestTimeout, "timeout"),
    (ConnectError, "connect_error"),
    (BadResponse, "bad_response"),
    (Busy, "busy"),
    (IterateError, "error"),
)


def make_transport(config: IterateConfig) -> Transport:
    """The transport ``config.transport`` names, with the config's pool size and timeouts."""
    # each transport module imports its HTTP library: import only the one in use
    if config.transport == "httpx":
        import httpx

        from pytest_iterate.client.transport.httpx_transport import HttpxTransport

        limits = httpx.Limits(
            max_connections=config.max_connections,
            max_keepalive_connections=config.max_connections,
        )
        return HttpxTransport(
            limits=limits,
            connect_timeout_s=config.connect_timeout_s,
            read_timeout_s=config.read_timeout_s,
        )
    from pytest_iterate.client.transport.aiohttp_transport import AiohttpTransport

    return AiohttpTransport(config)


def _authorization(config: IterateConfig, url_auth: Secret | None) -> Secret | None:
    """The ``Authorization`` value: ``Bearer`` the API key, or Basic from the URL's user info."""
    key = config.api_key  # raises ConfigError when required and missing
    if key is None:
        return url_auth
    if url_auth is not None:
        raise ConfigError(
            f"base_url {redact_url(config.base_url)} carries credentials and the environment "
            f"variable {config.api_key_env!r} holds an API key; both would be the Authorization "
            "header: keep one"
        )
    return Secret.bearer(key)


def outcome_label(exc: BaseException | None) -> str:
    """The ``outcome`` label of ``iterate_requests_total`` for an error (``"ok"`` for None)."""
    if exc is None:
        return "ok"
    for cls, label in _OUTCOMES:
        if isinstance(exc, cls):
            return label
    return "error"


class LLMClient:
    """Retried, throttled, instrumented calls to one OpenAI-compatible endpoint.

    >>> from pytest_iterate.client.config import IterateConfig
    >>> client = LLMClient(IterateConfig(base_url="http://127.0.0.1:8000/v1/"))
    >>> client.base_url, client.model
    ('http://127.0.0.1:8000/v1', 'gpt-4o-mini')
    """

    def __init__(
        self,
        config: IterateConfig,
        *,
        transport: Transport | None = None,
        metrics: IterateMetrics | None = None,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
        throttle: Throttle | None = None,
        token_cost: Callable[[LLMRequest], int] | None = None,
    ) -> None:
        self.config = config
        base_url, url_auth = split_credentials(config.base_url.rstrip("/"))
        self._base_url = base_url
        self._shown_url = redact_url(base_url)
        self._model = config.model
        self._metrics = metrics if metrics is not None else IterateMetrics()
        self._clock = clock
        self._timeout_s = float(config.request_timeout_s)
        self._urls = {
            "chat": self._base_url + "/chat/completions",
            "completions": self._base_url + "/completions",
        }
        self._auth = _authorization(config, url_auth)
        self._masks = (self._auth,) if self._auth else ()
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        self._headers = headers
        self._stream_headers = {**headers, "Accept": "text/event-stream"}
        self._owns_transport = transport is None
        self._transport = transport if transport is not None else make_transport(config)
        # aiohttp's own total timeout already bounds the whole attempt (body included)
        self._wrap_timeout = not getattr(self._transport, "enforces_total_timeout", False)
        self._throttle = (
            throttle
            if throttle is not None
            else Throttle(config.max_concurrent_requests, config.max_queue, self._metrics, clock, sleep)
        )
        #: Tokens the endpoint charges a request against its token budget (counted only once
        #: the endpoint has shown one): characters / 4 + max_tokens unless given; the pipeline
        #: gives the token guard's count.
        self.token_cost: Callable[[LLMRequest], int] = token_cost or estimate_tokens
        self._retrying = RetryingCaller(
            self._throttled_call,
            RetryPolicy.from_config(config),
            metrics=self._metrics,
            sleep=sleep,
            rng=rng,
        )
        self._children: dict[tuple[str, str], Any] = {}
        m = self._metrics
        self._m_duration = m.request_duration
        self._m_ttft = m.ttft
        self._m_tokens_in = m.tokens.labels("prompt")
        self._m_tokens_out = m.tokens.labels("completion")

    # -- properties ----------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        """The endpoint's base URL without trailing slash, credentials redacted."""
        return self._shown_url

    @property
    def model(self) -> str:
        return self._model

    @property
    def metrics(self) -> IterateMetrics:
        return self._metrics

    @property
    def throttle(self) -> Throttle:
        return self._throttle

    @property
    def transport(self) -> Transport:
        return self._transport

    @property
    def auth(self) -> Secret | None:
        """The ``Authorization`` value this client sends (masked in any repr), for other
        requests to the same endpoint (the token guard's probe and counts)."""
        return self._auth

    def __repr__(self) -> str:
        return f"LLMClient(base_url={self._shown_url!r}, model={self._model!r})"

    # -- lifecycle -----------------------------------------------------------------------
    async def __aenter__(self) -> LLMClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the transport's pool if the client made it (a passed-in one is left open)."""
        if self._owns_transport:
            await self._transport.aclose()

    # -- the public calls ----------------------------------------------------------------
    async def call(self, request: LLMRequest, *, on_delta: OnDelta | None = None) -> LLMResponse:
        """One request with retry, throttle and telemetry; raises an :class:`IterateError`."""
        start = self._clock()
        model = request.model or self._model
        try:
            wire = _WireTime()
            response = await self._retrying(
                request, on_delta=on_delta, request_id=new_request_id(), wire=wire
            )
        except BaseException as exc:
            self._count(model, outcome_label(exc) if isinstance(exc, Exception) else "cancelled")
            self._m_duration.observe(self._clock() - start)
            raise
        elapsed = self._clock() - start
        response.wire_s = wire.seconds
        before_send = elapsed - response.total_s
        if before_send > 0:
            response.total_s = elapsed
            if response.ttft_s is not None:
                response.ttft_s += before_send
        self._count(model, "ok")
        self._m_duration.observe(elapsed)
        if response.ttft_s is not None:
            self._m_ttft.observe(response.ttft_s)
        usage = response.usage
        if usage is not None:
            self._m_tokens_in.inc(usage.prompt_tokens)
            self._m_tokens_out.inc(usage.completion_tokens)
        return response

    __call__ = call

    def stream(self, request: LLMRequest) -> ResponseStream:
        """Stream text deltas: ``async for delta in client.stream(r)``; then ``.response``."""
        return ResponseStream(self, request if request.stream else request.replace(stream=True))

    @property
    def raw_call(self) -> Caller:
        """The bare single attempt (no retry, throttle or telemetry), as a Caller."""
        return self._raw_call

    # -- layers --------------------------------------------------------------------------
    def _count(self, model: str, outcome: str) -> None:
        child = self._children.get((model, outcome))
        if child is None:
            child = self._children[(model, outcome)] = self._metrics.requests.labels(model, outcome)
        child.inc()

    async def _throttled_call(
        self,
        request: LLMRequest,
        /,
        *,
        on_delta: OnDelta | None = None,
        request_id: str | None = None,
        wire: _WireTime | None = None,
    ) -> LLMResponse:
        throttle = self._throttle
        ticket = await throttle.acquire(self.token_cost(request) if throttle.paces_tokens else 0)
        t0 = self._clock()
        try:
            return await self._raw_call(request, on_delta=on_delta, request_id=request_id, ticket=ticket)
        finally:
            if wire is not None:
                wire.seconds += self._clock() - t0
            throttle.release()

    async def _raw_call(
        self,
        request: LLMRequest,
        /,
        *,
        on_delta: OnDelta | None = None,
        request_id: str | None = None,
        ticket: Ticket | None = None,
    ) -> LLMResponse:
        """One attempt; ``request_id`` is the logical call's (a fresh one when None), ``ticket``
        the throttle's record of its send (None: a bare attempt, anchored at its answer)."""
        url = self._urls[request.endpoint]
        body = encode_body(request, self._model)
        headers = {
            **(self._stream_headers if request.stream else self._headers),
            REQUEST_ID_HEADER: request_id or new_request_id(),
        }
        clock = self._clock
        t0 = clock()
        try:
            async with asyncio.timeout(self._timeout_s) if self._wrap_timeout else _NO_TIMEOUT:
                resp = await self._transport.send(
                    "POST",
                    url,
                    headers=headers,
                    json_body=body,
                    timeout_s=self._timeout_s,
                    auth=self._auth,
                )
                try:
                    self._throttle.observe_headers(resp.headers, status=resp.status, ticket=ticket)
                    reply = Reply(url, resp.status, self._masks)
                    if not 200 <= reply.status < 300:
                        raise reply.status_error(resp.headers, await resp.read())
                    if request.stream:
                        acc = StreamAccumulator(request, reply, started=t0, clock=clock, on_delta=on_delta)
                        response = await _read_stream(resp, acc)
                    else:
                        raw = await resp.read()
                        total = clock() - t0
                        response = parse_body(request, raw, reply)
                        response.ttft_s = response.total_s = total
                        if on_delta is not None and response.text:
                            on_delta(response.text)
                finally:
                    await resp.aclose()
        except TimeoutError as exc:
            raise RequestTimeout(f"{url}: no complete answer within {self._timeout_s:g}s", url=url) from exc
        return response


async def _read_stream(resp: TransportResponse, acc: StreamAccumulator) -> LLMResponse:
    """Feed the body to ``acc`` chunk by chunk until ``[DONE]``; a lost connection is a StreamError."""
    try:
        async for chunk in resp.iter_chunks():
            if acc.feed(chunk):
                break
    except ConnectError as exc:
        raise acc.cut(exc) from exc
    return acc.finish()


class _WireTime:
    """Seconds one logical call spent inside HTTP attempts (every attempt, failed ones too)."""

    __slots__ = ("seconds",)

    def __init__(self) -> None:
        self.seconds = 0.0


_END = object()


class ResponseStream:
    """Text deltas of one streamed call; ``response`` holds the final LLMResponse after.

    The call (with retry, throttle and telemetry) runs in a task; leaving the loop
    early cancels it.
    """

    def __init__(self, client: LLMClient, request: LLMRequest) -> None:
        self._client = client
        self._request = request
        self.response: LLMResponse | None = None

    def __aiter__(self) -> AsyncIterator[str]:
        return self._deltas()

    async def _deltas(self) -> AsyncIterator[str]:
        queue: asyncio.Queue[object] = asyncio.Queue()
        task = asyncio.create_task(self._client.call(self._request, on_delta=queue.put_nowait))
        task.add_done_callback(lambda _t: queue.put_nowait(_END))
        try:
            while True:
                item = await queue.get()
                if item is _END:
                    break
                yield item  # type: ignore[misc]
            self.response = task.result()
        finally:
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    async def collect(self) -> LLMResponse:
        """Drain the stream and return the final response."""
        async for _ in self:
            pass
        assert self.response is not None
        return self.response

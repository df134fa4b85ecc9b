"""The simulation core of the mock LLM endpoint, shared by both front ends.

``await core.handle(method, path, headers, body) -> MockReply``. The respx router
(:mod:`.respx_router`) and the loopback server (:mod:`.server`) only translate a
:class:`MockReply` to their wire; so both give the same answers for the same seed.

Determinism: POST completion requests are numbered 1, 2, 3... in arrival order.
The request's latencies (TTFT base, inter-token latency) and its fault come from
``random.Random(f"{seed}:{index}")``: the nth request always draws the same, under
any concurrency. The answer's words *and length* come from ``(seed, prompt text)``
(see :mod:`.answers`), so one prompt always gets one answer, streamed or not.

Order of checks: bad route/JSON (404/405/400) -> context window (400
``context_length_exceeded``) -> rate limit (429) -> injected fault -> capacity
queue -> latency -> answer. Errors other than hangs and resets are answered at once.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import random
import time
from collections import Counter, OrderedDict, deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pytest_iterate.doubles.mock.answers import Answer, AnswerBook, prompt_text
from pytest_iterate.doubles.mock.faults import FaultPlan
from pytest_iterate.doubles.mock.profiles import LatencyProfile, load_profile
from pytest_iterate.doubles.mock.ratelimit import RateLimiter

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

__all__ = ["CallRecord", "MockLLM", "MockReply", "MockStats"]

Sleep = Callable[[float], Awaitable[Any]]
_JSON = {"content-type": "application/json"}
_SSE = {"content-type": "text/event-stream", "cache-control": "no-cache"}
_CREATED = 1767225600
_ANSWER_CACHE = 2048


@dataclass(slots=True)
class MockReply:
    """What to send: ``status``/``headers`` and ``body`` or ``chunks`` (SSE).

    ``fault`` is ``"hang"`` (send nothing for ``hang_s``) or ``"reset"`` (drop the
    connection) for the front end to act on; other faults are already in the body.
    """

    status: int
    headers: dict[str, str]
    body: bytes = b""
    chunks: AsyncIterator[bytes] | None = None
    fault: str | None = None
    hang_s: float = 0.0


@dataclass(frozen=True, slots=True)
class CallRecord:
    """One request the core saw (``index`` 0 for non-completion routes)."""

    index: int
    method: str
    path: str
    body: Any
    stream: bool
    status: int
    fault: str | None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    planned_ttft_s: float = 0.0
    planned_total_s: float = 0.0


@dataclass(frozen=True, slots=True)
class MockStats:
    requests: int
    completions: int
    statuses: dict[int, int]
    faults: dict[str, int]
    concurrency: int
    max_concurrency: int
    queued: int
    prompt_tokens: int
    completion_tokens: int


@dataclass(slots=True)
class _State:
    requests: int = 0
    index: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    faults: Counter[str] = field(default_factory=Counter)
    active: int = 0
    max_active: int = 0
    decoding: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0


class _Slots:
    """FIFO capacity of concurrently decoding sequences (loop-agnostic)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.used = 0
        self.waiters: deque[asyncio.Future[None]] = deque()

    async def acquire(self) -> None:
        if self.used < self.capacity and not self.waiters:
            self.used += 1
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.waiters.append(fut)
        try:
            await fut
        except BaseException:
            if fut.done() and not fut.cancelled():
                self.release()
            else:
                self.waiters.remove(fut)
            raise

    def release(self) -> None:
        while self.waiters:
            fut = self.waiters.popleft()
            if not fut.done():
                fut.set_result(None)  # the slot passes straight to the waiter
                return
        self.used -= 1


class _Stream:
    """An SSE chunk iterator whose ``on_close`` runs exactly once (end, error or aclose)."""

    def __init__(self, gen: AsyncIterator[bytes], on_close: Callable[[], None]) -> None:
        self._gen = gen
        self._on_close: Callable[[], None] | None = on_close

    def __aiter__(self) -> _Stream:
        return self

    async def __anext__(self) -> bytes:
        try:
            return await self._gen.__anext__()
        except BaseException:
            self._close()
            raise

    def _close(self) -> None:
        if self._on_close is not None:
            cb, self._on_close = self._on_close, None
            cb()

    async def aclose(self) -> None:
        try:
            await self._gen.aclose()  # type: ignore[attr-defined]
        finally:
            self._close()


def _error_body(message: str, type_: str, code: str | None, param: str | None = None) -> bytes:
    return json.dumps({"error": {"message": message, "type": type_, "param": param, "code": code}}).encode()


def _sse(payload: Any) -> bytes:
    return b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"


class MockLLM:
    """A simulated OpenAI-compatible LLM service (latency, capacity, faults, rate limits).

    >>> import asyncio
    >>> core = MockLLM("zero")
    >>> r = asyncio.run(core.handle("GET", "/v1/models", {}, b""))
    >>> r.status, json.loads(r.body)["data"][0]["id"]
    (200, 'gpt-4o-mini')
    """

    def __init__(
        self,
        profile: LatencyProfile | str = "fast",
        seed: int = 0,
        faults: FaultPlan | None = None,
        rate_limit: RateLimiter | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        max_calls: int = 100_000,
    ) -> None:
        self.profile = profile if isinstance(profile, LatencyProfile) else load_profile(profile)
        self.seed = seed
        self.faults = faults if faults is not None and not faults.empty else None
        self.rate_limit = rate_limit
        self._clock = clock
        self._sleep = sleep
        self._book = AnswerBook()
        self._state = _State()
        self._slots = _Slots(self.profile.capacity)
        self._calls: deque[CallRecord] = deque(maxlen=max_calls)
        self._answers: OrderedDict[tuple[str, int, int], Answer] = OrderedDict()
        self._registry: CollectorRegistry | None = None
        self._metrics: dict[str, Any] = {}
        self._children: dict[tuple[str, ...], Any] = {}
        self.registry()
        self._models_body = json.dumps(
            {
                "object": "list",
                "data": [
                    {"id": m, "object": "model", "created": _CREATED, "owned_by": "pytest-iterate-mock"}
                    for m in self.profile.models
                ],
            }
        ).encode()

    def __repr__(self) -> str:
        return f"MockLLM(profile={self.profile.name!r}, seed={self.seed})"

    # -- observability ------------------------------------------------------------------
    @property
    def stats(self) -> MockStats:
        s = self._state
        return MockStats(
            requests=s.requests,
            completions=s.index,
            statuses=dict(s.statuses),
            faults=dict(s.faults),
            concurrency=s.active,
            max_concurrency=s.max_active,
            queued=len(self._slots.waiters),
            prompt_tokens=s.prompt_tokens,
            completion_tokens=s.completion_tokens,
        )

    @property
    def calls(self) -> list[CallRecord]:
        """The requests seen, oldest first (the last ``max_calls``)."""
        return list(self._calls)

    def registry(self) -> CollectorRegistry:
        """The core's own Prometheus registry (``mock_*`` metrics, not the global one)."""
        if self._registry is None:
            from prometheus_client import CollectorRegistry, Counter, Gauge

            reg = CollectorRegistry(auto_describe=True)
            self._metrics = {
                "requests": Counter(
                    "mock_requests", "Requests the mock answered", ["route", "status"], registry=reg
                ),
                "faults": Counter("mock_faults", "Faults the mock injected, by kind", ["kind"], registry=reg),
                "tokens": Counter("mock_tokens", "Tokens in and out", ["direction"], registry=reg),
            }
            g = Gauge("mock_concurrent_requests", "Requests in flight in the mock", registry=reg)
            g.set_function(lambda: self._state.active)
            q = Gauge("mock_queued_requests", "Requests waiting for a decode slot", registry=reg)
            q.set_function(lambda: len(self._slots.waiters))
            self._registry = reg
        return self._registry

    def exposition(self) -> bytes:
        """Prometheus text format of :meth:`registry`."""
        from prometheus_client import generate_latest

        return generate_latest(self.registry())

    def _child(self, metric: str, *labels: str) -> Any:
        """A labelled child of one of the core's metrics, looked up once (hot path)."""
        key = (metric, *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = self._metrics[metric].labels(*labels)
        return child

    def _count(self, route: str, status: int, fault: str | None) -> None:
        s = self._state
        s.statuses[status] += 1
        self._child("requests", route, str(status)).inc()
        if fault:
            s.faults[fault] += 1
            self._child("faults", fault).inc()

    def _tokens(self, prompt: int, completion: int) -> None:
        self._state.prompt_tokens += prompt
        self._state.completion_tokens += completion
        self._child("tokens", "prompt").inc(prompt)
        self._child("tokens", "completion").inc(completion)

    # -- entry point --------------------------------------------------------------------
    async def handle(self, method: str, path: str, headers: Mapping[str, str], body: bytes) -> MockReply:
        """Answer one HTTP request (``path`` like ``/v1/chat/completions``; query ignored)."""
        s = self._state
        s.requests += 1
        s.active += 1
        if s.active > s.max_active:
            s.max_active = s.active
        streaming = False
        try:
            route_path = path.split("?", 1)[0].rstrip("/")
            if route_path.endswith("/chat/completions"):
                route = "chat"
            elif route_path.endswith("/completions"):
                route = "completions"
            elif route_path.endswith("/models"):
                if method.upper() != "GET":
                    return self._error(
                        405, route_path, method, "Method not allowed", "invalid_request_error", None, "models"
                    )
                self._count("models", 200, None)
                self._calls.append(CallRecord(0, method, route_path, None, False, 200, None))
                return MockReply(200, dict(_JSON), self._models_body)
            else:
                return self._error(
                    404,
                    route_path,
                    method,
                    f"Unknown path {route_path!r}",
                    "invalid_request_error",
                    "not_found",
                    "other",
                )
            if method.upper() != "POST":
                return self._error(
                    405, route_path, method, "Method not allowed", "invalid_request_error", None, route
                )
            reply = await self._completion(route, route_path, body)
            streaming = reply.chunks is not None
            return reply
        finally:
            if not streaming:
                s.active -= 1

    def _error(
        self,
        status: int,
        path: str,
        method: str,
        message: str,
        type_: str,
        code: str | None,
        route: str,
        *,
        index: int = 0,
        data: Any = None,
        fault: str | None = None,
        headers: dict[str, str] | None = None,
        prompt_tokens: int = 0,
        param: str | None = None,
    ) -> MockReply:
        self._count(route, status, fault)
        self._calls.append(
            CallRecord(
                index,
                method,
                path,
                data,
                bool(isinstance(data, dict) and data.get("stream")),
                status,
                fault,
                prompt_tokens,
            )
        )
        return MockReply(status, {**_JSON, **(headers or {})}, _error_body(message, type_, code, param))

    # -- completions --------------------------------------------------------------------
    async def _completion(self, route: str, path: str, raw: bytes) -> MockReply:
        try:
            data = json.loads(raw or b"null")
        except ValueError:
            return self._error(
                400,
                path,
                "POST",
                "We could not parse the JSON body of your request.",
                "invalid_request_error",
                None,
                route,
            )
        if not isinstance(data, dict):
            return self._error(
                400,
                path,
                "POST",
                "The request body must be a JSON object.",
                "invalid_request_error",
                None,
                route,
            )
        if route == "chat":
            messages = data.get("messages")
            if not isinstance(messages, list) or not messages:
                return self._error(
                    400,
                    path,
                    "POST",
                    "'messages' is a required property",
                    "invalid_request_error",
                    None,
                    route,
                    data=data,
                    param="messages",
                )
            prompts: list[str] = [prompt_text(data)]
        else:
            p = data.get("prompt")
            if isinstance(p, str):
                prompts = [p]
            elif isinstance(p, list) and p and all(isinstance(x, str) for x in p):
                prompts = list(p)
            else:
                return self._error(
                    400,
                    path,
                    "POST",
                    "'prompt' must be a string or a list of strings",
                    "invalid_request_error",
                    None,
                    route,
                    data=data,
                    param="prompt",
                )
        s = self._state
        s.index += 1
        index = s.index
        rng = random.Random(f"{self.seed}:{index}")
        profile = self.profile
        model = str(data.get("model") or profile.models[0])
        max_tokens = data.get("max_completion_tokens", data.get("max_tokens"))
        max_tokens = int(max_tokens) if isinstance(max_tokens, int | float) else None
        stream = bool(data.get("stream"))
        counter = self._book.counter
        if route == "chat":
            prompt_tokens = counter.count_messages(data["messages"], model)
        else:
            prompt_tokens = sum(counter.count_cached(x) for x in prompts)
        # every request draws the same three numbers in the same order
        fault = self.faults.pick(index, rng) if self.faults is not None else None
        ttft_base = profile.ttft_base.sample(rng)
        itl = profile.itl.sample(rng)

        window = profile.context_window
        per_prompt = prompt_tokens if route == "chat" else max(counter.count_cached(x) for x in prompts)
        wanted = per_prompt + (max_tokens or 0)
        if wanted > window:
            msg = (
                f"This model's maximum context length is {window} tokens. However, you requested "
                f"{wanted} tokens ({per_prompt} in the messages, {max_tokens or 0} in the completion). "
                "Please reduce the length of the messages or completion."
            )
            return self._error(
                400,
                path,
                "POST",
                msg,
                "invalid_request_error",
                "context_length_exceeded",
                route,
                index=index,
                data=data,
                fault="context_length_exceeded",
                prompt_tokens=prompt_tokens,
                param="messages",
            )
        rl_headers: dict[str, str] = {}
        if self.rate_limit is not None:
            decision = self.rate_limit.take(prompt_tokens + (max_tokens or 0))
            rl_headers = decision.headers
            if not decision.allowed:
                wait = decision.retry_after_s
                return self._error(
                    429,
                    path,
                    "POST",
                    f"Rate limit reached for {model} on {decision.exceeded} per min. "
                    f"Please try again in {wait:.3f}s.",
                    "requests" if decision.exceeded == "requests" else "tokens",
                    "rate_limit_exceeded",
                    route,
                    index=index,
                    data=data,
                    fault="rate_limit",
                    prompt_tokens=prompt_tokens,
                    headers={
                        **rl_headers,
                        "retry-after": str(max(1, math.ceil(wait))),
                        "retry-after-ms": str(max(1, math.ceil(wait * 1000))),
                    },
                )
        if fault is not None:
            early = self._early_fault(fault, route, path, index, data, prompt_tokens, rl_headers)
            if early is not None:
                return early

        answers = [self._answer(p, max_tokens, route) for p in prompts]
        n_out = sum(len(a.tokens) for a in answers)
        longest = max((len(a.tokens) for a in answers), default=0)
        self._tokens(prompt_tokens, n_out)
        ttft = ttft_base + profile.prefill_per_token_s * prompt_tokens
        t0 = self._clock()
        await self._slots.acquire()
        queued = self._clock() - t0
        s.decoding += 1
        itl_eff = itl * profile.slowdown(s.decoding)
        planned_ttft = queued + ttft
        planned_total = planned_ttft + max(0, longest - 1) * itl_eff
        status = 500 if (fault == "stream_error" and not stream) else 200
        self._count(route, status, fault)
        self._calls.append(
            CallRecord(
                index,
                "POST",
                path,
                data,
                stream,
                status,
                fault,
                prompt_tokens,
                n_out,
                planned_ttft,
                planned_total,
            )
        )
        rid = f"{'chatcmpl' if route == 'chat' else 'cmpl'}-mock{index}"
        if stream:
            gen = self._stream(
                route, rid, model, answers, prompt_tokens, data, fault, t0 + queued, ttft, itl_eff
            )
            return MockReply(200, {**_SSE, **rl_headers}, chunks=_Stream(gen, self._stream_done))
        try:
            delay = planned_total - queued
            if delay > 0:
                await self._sleep(delay)
        finally:
            self._release()
        if status == 500:
            return MockReply(
                500,
                {**_JSON, **rl_headers},
                _error_body("The server had an error while processing your request.", "server_error", None),
            )
        body = self._body(route, rid, model, answers, prompt_tokens, fault)
        return MockReply(200, {**_JSON, **rl_headers}, body)

    def _release(self) -> None:
        self._state.decoding -= 1
        self._slots.release()

    def _stream_done(self) -> None:
        self._release()
        self._state.active -= 1

    def _early_fault(
        self, fault: str, route: str, path: str, index: int, data: Any, prompt_tokens: int, rl: dict[str, str]
    ) -> MockReply | None:
        assert self.faults is not None
        ra = self.faults.retry_after_s
        if fault in ("429", "429ms"):
            retry_header = (
                {"retry-after": str(math.ceil(ra))}
                if fault == "429"
                else {"retry-after-ms": str(max(0, round(ra * 1000)))}
            )
            return self._error(
                429,
                path,
                "POST",
                "Rate limit reached (injected).",
                "requests",
                "rate_limit_exceeded",
                route,
                index=index,
                data=data,
                fault=fault,
                prompt_tokens=prompt_tokens,
                headers={**rl, **retry_header},
            )
        if fault in ("500", "502", "503", "529"):
            text = {
                "500": "The server had an error while processing your request.",
                "502": "Bad gateway.",
                "503": "The engine is currently overloaded, please try again later.",
                "529": "Overloaded.",
            }[fault]
            return self._error(
                int(fault),
                path,
                "POST",
                text,
                "server_error",
                None,
                route,
                index=index,
                data=data,
                fault=fault,
                prompt_tokens=prompt_tokens,
                headers=rl,
            )
        if fault in ("hang", "reset"):
            self._count(route, 0, fault)
            self._calls.append(
                CallRecord(index, "POST", path, data, bool(data.get("stream")), 0, fault, prompt_tokens)
            )
            return MockReply(0, {}, fault=fault, hang_s=self.faults.hang_s)
        return None

    def _answer(self, prompt: str, max_tokens: int | None, route: str) -> Answer:
        key = (prompt, max_tokens if max_tokens is not None else -1, 0 if route == "chat" else 1)
        cached = self._answers.get(key)
        if cached is not None:
            self._answers.move_to_end(key)
            return cached
        target = max(1, round(self.profile.output_tokens.sample(_length_rng(self.seed, prompt))))
        ans = self._book.answer(self.seed, prompt, target, max_tokens)
        self._answers[key] = ans
        if len(self._answers) > _ANSWER_CACHE:
            self._answers.popitem(last=False)
        return ans

    def _body(
        self, route: str, rid: str, model: str, answers: list[Answer], prompt_tokens: int, fault: str | None
    ) -> bytes:
        n_out = sum(len(a.tokens) for a in answers)
        if route == "chat":
            choices: list[dict[str, Any]] = [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": answers[0].text, "refusal": None},
                    "logprobs": None,
                    "finish_reason": answers[0].finish_reason,
                }
            ]
            obj = "chat.completion"
        else:
            choices = [
                {"index": i, "text": a.text, "logprobs": None, "finish_reason": a.finish_reason}
                for i, a in enumerate(answers)
            ]
            obj = "text_completion"
        if fault == "empty_choices":
            choices = []
        body = json.dumps(
            {
                "id": rid,
                "object": obj,
                "created": _CREATED,
                "model": model,
                "choices": choices,
                "usage": {
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": n_out,
                    "total_tokens": prompt_tokens + n_out,
                },
            }
        ).encode()
        if fault in ("malformed_json", "stream_cut"):
            body = body[: len(body) // 2]
        return body

    async def _stream(
        self,
        route: str,
        rid: str,
        model: str,
        answers: list[Answer],
        prompt_tokens: int,
        data: dict[str, Any],
        fault: str | None,
        start: float,
        ttft: float,
        itl: float,
    ) -> AsyncIterator[bytes]:
        chat = route == "chat"
        base: dict[str, Any] = {
            "id": rid,
            "object": "chat.completion.chunk" if chat else "text_completion",
            "created": _CREATED,
            "model": model,
        }
        texts = [a.tokens for a in answers]
        decode = self._book.counter.encoding.decode_single_token_bytes  # answers are ASCII: safe per token
        longest = max((len(t) for t in texts), default=0)
        cut_at = longest // 2
        clock, sleep = self._clock, self._sleep
        if fault == "empty_choices":
            if ttft > 0:
                await sleep(ttft)
            yield _sse({**base, "choices": []})
            yield b"data: [DONE]\n\n"
            return
        for step in range(longest):
            due = start + ttft + step * itl
            wait = due - clock()
            if wait > 0:
                await sleep(wait)
            if step == cut_at and fault in ("stream_cut", "stream_error", "malformed_json"):
                if fault == "stream_cut":
                    return
                if fault == "stream_error":
                    err = {
                        "error": {
                            "message": "The server had an error while streaming.",
                            "type": "server_error",
                            "param": None,
                            "code": "stream_error",
                        }
                    }
                    yield b"event: error\ndata: " + json.dumps(err).encode() + b"\n\n"
                    return
                yield b'data: {"id": "' + rid.encode() + b'", "choices": [{"delta": {"content": \n\n'
            choices = []
            for i, toks in enumerate(texts):
                if step < len(toks):
                    piece = decode(toks[step]).decode("utf-8", errors="replace")
                    if chat:
                        delta: dict[str, Any] = {"content": piece}
                        if step == 0:
                            delta = {"role": "assistant", "content": piece}
                        choices.append({"index": i, "delta": delta, "logprobs": None, "finish_reason": None})
                    else:
                        choices.append({"index": i, "text": piece, "logprobs": None, "finish_reason": None})
            yield _sse({**base, "choices": choices})
        final: list[dict[str, Any]] = [
            (
                {"index": i, "delta": {}, "logprobs": None, "finish_reason": a.finish_reason}
                if chat
                else {"index": i, "text": "", "logprobs": None, "finish_reason": a.finish_reason}
            )
            for i, a in enumerate(answers)
        ]
        yield _sse({**base, "choices": final})
        opts = data.get("stream_options")
        if isinstance(opts, dict) and opts.get("include_usage"):
            n_out = sum(len(a.tokens) for a in answers)
            yield _sse(
                {
                    **base,
                    "choices": [],
                    "usage": {
                        "prompt_tokens": prompt_tokens,
                        "completion_tokens": n_out,
                        "total_tokens": prompt_tokens + n_out,
                    },
                }
            )
        yield b"data: [DONE]\n\n"


def _length_rng(seed: int, prompt: str) -> random.Random:
    digest = hashlib.sha256(f"len\x00{seed}\x00{prompt}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))

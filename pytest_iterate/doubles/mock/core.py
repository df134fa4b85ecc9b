"""The simulation core of the mock LLM endpoint, shared by both front ends.

``await core.handle(method, path, headers, body) -> MockReply``. The respx router
(:mod:`.respx_router`) and the loopback server (:mod:`.server`) only translate a
:class:`MockReply` to their wire; so both give the same answers for the same seed.

Routes (matched on the end of the path, so ``/health`` and ``/v1/health`` alike;
the query string is ignored):

    POST .../chat/completions, .../completions   the simulated completions (below)
    GET  .../models                               the profile's models, OpenAI's list shape
    GET  .../models/{id}                          one model, or 404 ``model_not_found``
    GET  .../health                               200 ``{"status": "ok"}``
    GET  .../version                              200 ``{"version": "<pytest-iterate version>"}``

``HEAD`` on the GET routes answers 200 without a body; other methods get 405 and
other paths 404, both in OpenAI's error shape.

A completion request goes through three steps, each in its own module and each
passing a small typed record to the next:

    validate  (:mod:`.request`)  HTTP body -> CompletionRequest, or Invalid (a 400)
    plan      (:mod:`.plan`)     draws, refusals, fault, capacity -> Plan, Refusal or Drop
    render    (:mod:`.render`)   Plan -> JSON body or SSE stream

Determinism: POST completion requests are numbered 1, 2, 3... in arrival order.
The request's latencies (TTFT base, inter-token latency) and its fault come from
``random.Random(f"{seed}:{index}")``: the nth request always draws the same, under
any concurrency. First-attempts faults (``503x3=0.02``, see :mod:`.faults`) are a
function of ``(seed, request id)`` and the attempt's number instead, so the same
logical requests fail whatever the arrival order. The answer's words *and length*
come from ``(seed, prompt text)`` (see :mod:`.answers`), so one prompt always gets
one answer, streamed or not; its code block opens with ``# answers <digest>``
naming the request it answers (:mod:`.digest`).

Attempts: every POST to a completion route is an attempt of a logical request
named by its ``X-Client-Request-Id`` header (the same over a call's retries), or by
:func:`~.digest.request_digest` of its body without one. :attr:`MockLLM.stats`
counts logical requests, the most attempts one made and how many made k attempts;
:meth:`MockLLM.attempts` looks one up (see :class:`~.calls.Attempts`).

Memory is bounded (:mod:`.calls`): :attr:`MockLLM.stats` counts every request,
:attr:`MockLLM.calls` keeps the last ``keep_calls`` records (default 1,000), without
the request bodies unless ``keep_bodies=True``.

Order of checks: bad route/JSON (404/405/400) -> context window (400
``context_length_exceeded``) -> rate limit (429) -> injected fault -> capacity
queue -> latency -> answer. Errors other than hangs and resets are answered at once.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest

from pytest_iterate import __version__
from pytest_iterate.doubles.mock.answers import AnswerBook
from pytest_iterate.doubles.mock.calls import (
    DEFAULT_KEEP_CALLS,
    DEFAULT_KEEP_REQUEST_IDS,
    Attempts,
    CallLog,
    CallRecord,
    MockStats,
)
from pytest_iterate.doubles.mock.faults import FaultPlan
from pytest_iterate.doubles.mock.plan import (
    STREAM_ERROR_TEXT,
    AnswerSource,
    Drop,
    Plan,
    Slots,
    draw,
    fault_outcome,
    rate_refusal,
    window_refusal,
)
from pytest_iterate.doubles.mock.profiles import LatencyProfile, load_profile
from pytest_iterate.doubles.mock.ratelimit import RateLimiter
from pytest_iterate.doubles.mock.render import CREATED, ClosingStream, completion_body, sse_events
from pytest_iterate.doubles.mock.request import CompletionRequest, Invalid, Refusal, Route, parse_completion

__all__ = ["CallRecord", "MockLLM", "MockReply", "MockStats"]

Sleep = Callable[[float], Awaitable[Any]]
_JSON = {"content-type": "application/json"}
_SSE = {"content-type": "text/event-stream", "cache-control": "no-cache"}
_HEALTH = json.dumps({"status": "ok"}).encode()
_VERSION = json.dumps({"version": __version__}).encode()


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


@dataclass(slots=True)
class _State:
    requests: int = 0
    index: int = 0
    active: int = 0
    max_active: int = 0
    decoding: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0


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
        keep_calls: int = DEFAULT_KEEP_CALLS,
        keep_bodies: bool = False,
        keep_request_ids: int = DEFAULT_KEEP_REQUEST_IDS,
    ) -> None:
        self.profile = profile if isinstance(profile, LatencyProfile) else load_profile(profile)
        self.seed = seed
        self.faults = faults if faults is not None and not faults.empty else None
        self.rate_limit = rate_limit
        self._clock = clock
        self._sleep = sleep
        self._book = AnswerBook()
        self._answers = AnswerSource(self._book, self.profile, seed)
        self._state = _State()
        self._slots = Slots(self.profile.capacity)
        self._log = CallLog(keep_calls)
        self.keep_bodies = keep_bodies
        self._attempts = Attempts(keep_request_ids)
        self._registry: CollectorRegistry | None = None
        self._metrics: dict[str, Any] = {}
        self._children: dict[tuple[str, ...], Any] = {}
        self.registry()
        models = [
            {"id": m, "object": "model", "created": CREATED, "owned_by": "pytest-iterate-mock"}
            for m in self.profile.models
        ]
        self._models_body = json.dumps({"object": "list", "data": models}).encode()
        self._model_bodies = {m["id"]: json.dumps(m).encode() for m in models}

    def __repr__(self) -> str:
        return f"MockLLM(profile={self.profile.name!r}, seed={self.seed})"

    # -- observability ------------------------------------------------------------------
    @property
    def stats(self) -> MockStats:
        s, log, attempts = self._state, self._log, self._attempts
        return MockStats(
            requests=s.requests,
            completions=s.index,
            statuses=dict(log.statuses),
            faults=dict(log.faults),
            concurrency=s.active,
            max_concurrency=s.max_active,
            queued=len(self._slots.waiters),
            prompt_tokens=s.prompt_tokens,
            completion_tokens=s.completion_tokens,
            routes=dict(log.routes),
            recorded=log.recorded,
            kept=len(log.recent),
            logical_requests=attempts.logical,
            max_attempts=attempts.max_attempts,
            attempts=attempts.histogram(),
            request_ids_evicted=attempts.evicted,
        )

    def attempts(self, request_id: str) -> int:
        """Attempts seen so far of one logical request: its ``X-Client-Request-Id``, or
        :func:`~.digest.request_digest` of its body when it was sent without one (0: unknown)."""
        return self._attempts.get(request_id)

    @property
    def calls(self) -> list[CallRecord]:
        """The recent requests, oldest first (the last ``keep_calls``; all are counted in :attr:`stats`)."""
        return list(self._log.recent)

    def registry(self) -> CollectorRegistry:
        """The core's own Prometheus registry (``mock_*`` metrics, not the global one)."""
        if self._registry is None:
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

        return generate_latest(self.registry())

    def _child(self, metric: str, *labels: str) -> Any:
        """A labelled child of one of the core's metrics, looked up once (hot path)."""
        key = (metric, *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = self._metrics[metric].labels(*labels)
        return child

    def _record(self, route: str, record: CallRecord) -> None:
        """Count ``record`` (stats and Prometheus) and keep it in the ring of recent calls."""
        self._log.add(route, record)
        self._child("requests", route, str(record.status)).inc()
        if record.fault:
            self._child("faults", record.fault).inc()

    def _body(self, body: Any) -> Any:
        return body if self.keep_bodies else None

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
            route_path = path.split("?", 1)[0].rstrip("/") or "/"
            verb = method.upper()
            route = _completion_route(route_path)
            if route is not None:
                if verb != "POST":
                    return self._refuse(route, route_path, method, _not_allowed())
                reply = await self._completion(route, route_path, headers, body)
                streaming = reply.chunks is not None
                return reply
            probe = self._probe(route_path)
            if probe is None:
                unknown = Refusal(404, f"Unknown path {route_path!r}", code="not_found")
                return self._refuse("other", route_path, method, unknown)
            name, answer = probe
            if verb not in ("GET", "HEAD"):
                return self._refuse(name, route_path, method, _not_allowed())
            if isinstance(answer, Refusal):
                return self._refuse(name, route_path, method, answer)
            self._record(name, _plain(method, route_path, 200))
            return MockReply(200, dict(_JSON), b"" if verb == "HEAD" else answer)
        finally:
            if not streaming:
                s.active -= 1

    def _probe(self, route_path: str) -> tuple[str, bytes | Refusal] | None:
        """``(route, body or 404)`` of a GET route: models, one model, health, version."""
        if route_path.endswith("/models"):
            return "models", self._models_body
        _, sep, model = route_path.partition("/models/")
        if sep:
            found = self._model_bodies.get(model)
            if found is None:
                missing = Refusal(
                    404, f"The model {model!r} does not exist", code="model_not_found", param="model"
                )
                return "models", missing
            return "models", found
        if route_path.endswith("/health"):
            return "health", _HEALTH
        if route_path.endswith("/version"):
            return "version", _VERSION
        return None

    def _refuse(
        self,
        route: str,
        path: str,
        method: str,
        refusal: Refusal,
        *,
        body: Any = None,
        request_id: str = "",
        attempt: int = 0,
    ) -> MockReply:
        """Count, record and answer an error made before planning (``body``: the parsed JSON)."""
        record = CallRecord(
            index=0,
            method=method,
            path=path,
            body=self._body(body),
            stream=bool(isinstance(body, Mapping) and body.get("stream")),
            status=refusal.status,
            fault=refusal.fault,
            request_id=request_id,
            attempt=attempt,
        )
        self._record(route, record)
        return _error_reply(refusal)

    def _call(
        self,
        request: CompletionRequest,
        index: int,
        attempt: int,
        status: int,
        fault: str | None,
        plan: Plan | None = None,
    ) -> CallRecord:
        """The record of a numbered completion request (``plan`` when it is answered)."""
        return CallRecord(
            index=index,
            method="POST",
            path=request.path,
            body=self._body(request.body),
            stream=request.stream,
            status=status,
            fault=fault,
            prompt_tokens=request.prompt_tokens,
            completion_tokens=plan.completion_tokens if plan else 0,
            planned_ttft_s=plan.planned_ttft_s if plan else 0.0,
            planned_total_s=plan.planned_total_s if plan else 0.0,
            digest=request.digest,
            request_id=request.request_id,
            attempt=attempt,
        )

    # -- completions: validate, plan, render ---------------------------------------------
    async def _completion(self, route: Route, path: str, headers: Mapping[str, str], raw: bytes) -> MockReply:
        parsed = parse_completion(
            route, path, headers, raw, default_model=self.profile.models[0], counter=self._book.counter
        )
        attempt = self._attempts.add(parsed.request_id)
        if isinstance(parsed, Invalid):
            return self._refuse(
                route,
                path,
                "POST",
                parsed.refusal,
                body=parsed.body,
                request_id=parsed.request_id,
                attempt=attempt,
            )
        planned = await self._plan(parsed, attempt)
        if isinstance(planned, Plan):
            return await self._render(planned)
        return planned

    async def _plan(self, request: CompletionRequest, attempt: int) -> Plan | MockReply:
        """Number the request, draw, check and admit it; a refusal or a drop is answered here.

        ``attempt`` is the request's attempt number within its logical request.
        """
        s = self._state
        s.index += 1
        index = s.index
        profile = self.profile
        draws = draw(self.seed, index, profile, self.faults, request_id=request.request_id, attempt=attempt)
        refusal = window_refusal(request, profile)
        headers: Mapping[str, str] = {}
        if refusal is None and self.rate_limit is not None:
            decision = self.rate_limit.take(request.rate_tokens)
            headers = decision.headers
            if not decision.allowed:
                refusal = rate_refusal(decision, request.model, request.rate_tokens)
        if refusal is None and draws.fault is not None:
            assert self.faults is not None
            outcome = fault_outcome(draws.fault, self.faults, headers)
            if isinstance(outcome, Drop):
                return self._drop(request, index, attempt, outcome)
            refusal = outcome
        if refusal is not None:
            self._record(request.route, self._call(request, index, attempt, refusal.status, refusal.fault))
            return _error_reply(refusal)
        answers = tuple(self._answers.get(p, request) for p in request.prompts)
        self._tokens(request.prompt_tokens, sum(len(a.tokens) for a in answers))
        ttft = draws.ttft_base_s + profile.prefill_per_token_s * request.prompt_tokens
        t0 = self._clock()
        await self._slots.acquire()
        queued = self._clock() - t0
        s.decoding += 1
        plan = Plan(
            request=request,
            index=index,
            fault=draws.fault,
            answers=answers,
            headers=headers,
            start=t0 + queued,
            queued_s=queued,
            ttft_s=ttft,
            itl_s=draws.itl_s * profile.slowdown(s.decoding),
        )
        self._record(request.route, self._call(request, index, attempt, plan.status, plan.fault, plan))
        return plan

    def _drop(self, request: CompletionRequest, index: int, attempt: int, drop: Drop) -> MockReply:
        self._record(request.route, self._call(request, index, attempt, 0, drop.fault))
        return MockReply(0, {}, fault=drop.fault, hang_s=drop.hang_s)

    async def _render(self, plan: Plan) -> MockReply:
        """Send the plan: a paced stream, or the whole body after the planned time."""
        headers = dict(plan.headers)
        if plan.request.stream:
            token_bytes = self._book.counter.encoding.decode_single_token_bytes
            events = sse_events(plan, self._clock, self._sleep, token_bytes)
            return MockReply(200, {**_SSE, **headers}, chunks=ClosingStream(events, self._stream_done))
        try:
            delay = plan.planned_total_s - plan.queued_s
            if delay > 0:
                await self._sleep(delay)
        finally:
            self._release()
        if plan.status == 500:
            return _error_reply(Refusal(500, STREAM_ERROR_TEXT, type="server_error", headers=headers))
        return MockReply(200, {**_JSON, **headers}, completion_body(plan))

    def _release(self) -> None:
        self._state.decoding -= 1
        self._slots.release()

    def _stream_done(self) -> None:
        self._release()
        self._state.active -= 1


def _completion_route(route_path: str) -> Route | None:
    if route_path.endswith("/chat/completions"):
        return "chat"
    if route_path.endswith("/completions"):
        return "completions"
    return None


def _plain(method: str, path: str, status: int) -> CallRecord:
    """The record of a request to a route other than the completions."""
    return CallRecord(index=0, method=method, path=path, body=None, stream=False, status=status, fault=None)


def _error_reply(refusal: Refusal) -> MockReply:
    return MockReply(refusal.status, {**_JSON, **refusal.headers}, refusal.body())


def _not_allowed() -> Refusal:
    return Refusal(405, "Method not allowed")

"""Plan: what happens to one valid completion request, as typed records.

The second of the core's three steps (validate, plan, render; see :mod:`.core`).
Every numbered request makes the same draws in the same order (:func:`draw`):
its fault, its TTFT base and its inter-token latency, from
``random.Random(f"{seed}:{index}")``. Then, in this order, the request may be
refused (:func:`window_refusal`, the rate limiter, :func:`fault_outcome`) or
dropped (:class:`Drop`: a hang or a reset); otherwise it waits for a decode slot
(:class:`Slots`) and becomes a :class:`Plan`: its answers and every time the
render step needs.

Answers: their words and their length come from ``(seed, prompt)`` only
(:class:`AnswerSource`), so one prompt gets one answer whatever its index.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import random
from collections import OrderedDict, deque
from collections.abc import Mapping
from dataclasses import dataclass

from pytest_iterate.doubles.mock.answers import Answer, AnswerBook
from pytest_iterate.doubles.mock.digest import answer_tag, item_digest
from pytest_iterate.doubles.mock.faults import FaultPlan
from pytest_iterate.doubles.mock.profiles import LatencyProfile
from pytest_iterate.doubles.mock.ratelimit import RateDecision, format_reset
from pytest_iterate.doubles.mock.request import CompletionRequest, Refusal

__all__ = [
    "AnswerSource",
    "Draws",
    "Drop",
    "Plan",
    "Slots",
    "draw",
    "fault_outcome",
    "rate_refusal",
    "window_refusal",
]

_STATUS_TEXT = {
    "500": "The server had an error while processing your request.",
    "502": "Bad gateway.",
    "503": "The engine is currently overloaded, please try again later.",
    "529": "Overloaded.",
}
STREAM_ERROR_TEXT = _STATUS_TEXT["500"]


@dataclass(frozen=True, slots=True)
class Draws:
    """The three numbers a numbered request draws, in this order, from its own RNG."""

    fault: str | None
    ttft_base_s: float
    itl_s: float


def draw(
    seed: int,
    index: int,
    profile: LatencyProfile,
    faults: FaultPlan | None,
    *,
    request_id: str = "",
    attempt: int = 1,
) -> Draws:
    """The draws of the ``index``-th completion request (1-based) under ``seed``.

    ``request_id`` and ``attempt`` (the attempt's number within its logical request)
    decide the first-attempts faults (see :mod:`.faults`); they draw nothing.
    """
    rng = random.Random(f"{seed}:{index}")
    fault = None
    if faults is not None:
        fault = faults.pick(index, rng, request_id=request_id, attempt=attempt, seed=seed)
    ttft_base = profile.ttft_base.sample(rng)
    itl = profile.itl.sample(rng)
    return Draws(fault, ttft_base, itl)


@dataclass(frozen=True, slots=True)
class Drop:
    """No HTTP answer at all: ``hang`` (silence for ``hang_s``) or ``reset`` (connection dropped)."""

    fault: str
    hang_s: float


@dataclass(frozen=True, slots=True)
class Plan:
    """A request that will be answered: its answers and its timing.

    ``start`` is the clock time at which it got its decode slot (``queued_s`` after
    it asked); the first token is due ``ttft_s`` later and each next one ``itl_s``
    after that (``itl_s`` already includes the load slowdown at admission).
    """

    request: CompletionRequest
    index: int
    fault: str | None
    answers: tuple[Answer, ...]
    headers: Mapping[str, str]
    start: float
    queued_s: float
    ttft_s: float
    itl_s: float

    @property
    def id(self) -> str:
        return f"{'chatcmpl' if self.request.route == 'chat' else 'cmpl'}-mock{self.index}"

    @property
    def completion_tokens(self) -> int:
        return sum(len(a.tokens) for a in self.answers)

    @property
    def longest(self) -> int:
        """Tokens of the longest answer: how many stream steps there are."""
        return max((len(a.tokens) for a in self.answers), default=0)

    @property
    def planned_ttft_s(self) -> float:
        return self.queued_s + self.ttft_s

    @property
    def planned_total_s(self) -> float:
        return self.planned_ttft_s + max(0, self.longest - 1) * self.itl_s

    @property
    def status(self) -> int:
        """200, or 500 for a ``stream_error`` fault on a request that is not streamed."""
        return 500 if (self.fault == "stream_error" and not self.request.stream) else 200


def window_refusal(request: CompletionRequest, profile: LatencyProfile) -> Refusal | None:
    """``400 context_length_exceeded`` when prompt + ``max_tokens`` exceed the window."""
    window, wanted = profile.context_window, request.wanted_tokens
    if wanted <= window:
        return None
    budget = request.max_tokens or 0
    msg = (
        f"This model's maximum context length is {window} tokens. However, you requested "
        f"{wanted} tokens ({request.window_tokens} in the messages, {budget} in the completion). "
        "Please reduce the length of the messages or completion."
    )
    code = "context_length_exceeded"
    return Refusal(400, msg, code=code, param="messages", fault=code)


def rate_refusal(decision: RateDecision, model: str, requested: int = 1) -> Refusal:
    """The 429 of a request the rate limiter refused, worded as OpenAI words it, with
    ``Retry-After`` (whole seconds) and ``retry-after-ms``. ``requested`` is the request's
    charge in tokens (used in the message of a token refusal)."""
    wait = decision.retry_after_s
    exceeded = decision.exceeded or "requests"
    short = "RPM" if exceeded == "requests" else "TPM"
    limit, remaining = decision.limit, decision.remaining
    used = max(0, limit - remaining)
    asked = 1 if exceeded == "requests" else requested
    return Refusal(
        429,
        f"Rate limit reached for {model} in organization org-mock on {exceeded} per min ({short}): "
        f"Limit {limit}, Used {used}, Requested {asked}. Please try again in {format_reset(wait)}.",
        type=exceeded,
        code="rate_limit_exceeded",
        fault="rate_limit",
        headers={
            **decision.headers,
            "retry-after": str(max(1, math.ceil(wait))),
            "retry-after-ms": str(max(1, math.ceil(wait * 1000))),
        },
    )


def fault_outcome(fault: str, faults: FaultPlan, headers: Mapping[str, str]) -> Refusal | Drop | None:
    """An injected fault answered before any token (status faults, hang, reset), or None.

    The other kinds (``malformed_json``, ``stream_cut``, ``stream_error``,
    ``empty_choices``) change the rendered answer instead.
    """
    if fault in ("429", "429ms"):
        ra = faults.retry_after_s
        retry_header = (
            {"retry-after": str(math.ceil(ra))}
            if fault == "429"
            else {"retry-after-ms": str(max(0, round(ra * 1000)))}
        )
        return Refusal(
            429,
            "Rate limit reached (injected).",
            type="requests",
            code="rate_limit_exceeded",
            fault=fault,
            headers={**headers, **retry_header},
        )
    text = _STATUS_TEXT.get(fault)
    if text is not None:
        return Refusal(int(fault), text, type="server_error", fault=fault, headers=headers)
    if fault in ("hang", "reset"):
        return Drop(fault, faults.hang_s)
    return None


class AnswerSource:
    """Answers by prompt, ``max_tokens``, route and request digest, memoised (LRU).

    The words and the target length come from ``(seed, prompt)`` (each item of a
    packed prompt: ``(seed, item)``); the digest only adds the tag line (see
    :mod:`.digest`: one prompt of a list, or one packed item, is tagged with the request
    it stands for), counted inside the target length.
    """

    def __init__(self, book: AnswerBook, profile: LatencyProfile, seed: int, *, size: int = 2048) -> None:
        self.book = book
        self.profile = profile
        self.seed = seed
        self.size = size
        self._memo: OrderedDict[tuple[str, int, int, str], Answer] = OrderedDict()

    def get(self, prompt: str, request: CompletionRequest) -> Answer:
        """The answer to ``prompt``, one of ``request.prompts``."""
        max_tokens, route = request.max_tokens, request.route
        body = request.body
        if len(request.prompts) > 1:  # one prompt of a list: its own request
            body = {**body, "prompt": prompt}
            digest = item_digest(request.body, prompt)
        else:
            digest = request.digest
        key = (prompt, max_tokens if max_tokens is not None else -1, 0 if route == "chat" else 1, digest)
        memo = self._memo
        cached = memo.get(key)
        if cached is not None:
            memo.move_to_end(key)
            return cached

        def item_tag(item: str, items: int) -> str:
            return answer_tag(item_digest(body, item, items=items, packed=True))

        answer = self.book.answer(
            self.seed,
            prompt,
            self._target(prompt),
            max_tokens,
            tag=answer_tag(digest),
            item_target=self._target,
            item_tag=item_tag,
        )
        memo[key] = answer
        if len(memo) > self.size:
            memo.popitem(last=False)
        return answer

    def _target(self, prompt: str) -> int:
        """The answer length of ``prompt`` (a function of seed and prompt only)."""
        return max(1, round(self.profile.output_tokens.sample(_length_rng(self.seed, prompt))))


def _length_rng(seed: int, prompt: str) -> random.Random:
    digest = hashlib.sha256(f"len\x00{seed}\x00{prompt}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


class Slots:
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

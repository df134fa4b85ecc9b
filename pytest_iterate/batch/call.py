"""batch_llm_call: many short prompts, fewer calls, answers in the order asked.

Three strategies, chosen per endpoint:

``native``
    Several prompts in one ``/v1/completions`` request (``prompt`` is a list); the
    answers come back as ``response.texts``. Not every server supports it (the
    llama.cpp server answers 500), so the first native request to an endpoint is a
    probe: its outcome is remembered in an :class:`EndpointCapabilities` and an
    endpoint that refused is never asked again; its prompts fall back to ``packed``.
``packed``
    Several short prompts in one chat request built by
    :func:`~pytest_iterate.batch.packing.pack_prompts`; the answer is cut with
    :func:`~pytest_iterate.batch.packing.split_packed_answer`. Items that fail to
    split (or the last item of an answer cut at ``max_tokens``) are retried one by one.
``concurrent``
    One plain chat request per prompt.

``auto`` uses native where the endpoint supports it (probing an unknown endpoint),
packed for prompts of at most ``pack_max_chars`` characters, and concurrent for the
rest. In every strategy duplicates are sent once, at most ``concurrency`` calls are
in flight (one ``asyncio.Semaphore``), and answers are returned in input order.

:func:`batch_llm_call_results` keeps going when an item fails and returns each
item's answer or error in place, with ``calls_made`` (calls to the caller, probes and
per-item retries included) and ``calls_saved`` (prompts minus calls made; negative
when fallbacks cost more calls than they saved). :func:`batch_llm_call` returns the
answers and raises the first item's error if any failed.

Each answered item also gets its own :class:`~pytest_iterate.client.types.LLMResponse`
(``BatchResult.responses``): its text and finish reason, the call's timings, and its
share of the call's ``usage`` (split by the characters of its prompt and of its answer,
so the items' usages add up to the call's). ``BatchResult.calls`` says which item each
call is counted for: a call that served a group counts for the group's first item.

A packed request the caller refuses as too long for the context window
(:class:`~pytest_iterate.client.errors.ContextOverflow`) is split in halves, each packed
again, down to single items. A caller that knows how many requests it really sent for a
call (none when it refused before sending, two after a retry) says so with
:func:`report_sends`; every other call counts as one.

``system`` is a system message shared by every prompt: the chat requests carry it as
their first message (a packed request once, before the packed items), a native
completion prompt starts with it and a blank line. ``batch_caller``, when given,
sends the requests that carry several items (native and packed), ``caller`` the
single ones (the pipeline refuses, rather than truncates, a batch that would not fit
the context window: its items then go one by one).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, TypedDict, Unpack

from pytest_iterate.batch.packing import pack_prompts, split_packed_answer
from pytest_iterate.client.errors import (
    BadResponse,
    ConfigError,
    ContextOverflow,
    HTTPStatusError,
    IterateError,
)
from pytest_iterate.client.types import LLMRequest, LLMResponse, Message, Usage

if TYPE_CHECKING:
    from pytest_iterate.client.types import Caller

__all__ = [
    "STRATEGIES",
    "BatchArgs",
    "BatchResult",
    "EndpointCapabilities",
    "Strategy",
    "batch_llm_call",
    "batch_llm_call_results",
    "native_prompt",
    "native_request",
    "report_sends",
]

# [requests sent, reported?] for the call in progress (see report_sends)
_SENDS: ContextVar[list[int] | None] = ContextVar("pytest_iterate_batch_sends", default=None)


def report_sends(n: int) -> None:
    """For a caller under :func:`batch_llm_call_results`: this call sent ``n`` requests upstream
    (0 when refused before sending, 2 after a retry). Without a report a call counts as one."""
    box = _SENDS.get()
    if box is not None:
        box[0] += n
        box[1] = 1


Strategy = Literal["auto", "native", "packed", "concurrent"]
STRATEGIES: tuple[Strategy, ...] = ("auto", "native", "packed", "concurrent")


def native_prompt(prompt: str, system: str | None = None) -> str:
    """The completion prompt a native batch sends for ``prompt`` (with its system message)."""
    return prompt if system is None else f"{system}\n\n{prompt}"


def native_request(request: LLMRequest) -> LLMRequest:
    """The completion request a native batch stands for when it carries the chat ``request``
    (a system message and a user message, or a user message): the same model, ``max_tokens``
    and parameters, its messages as one prompt."""
    *head, last = request.messages
    system = str(head[0]["content"]) if head else None
    return LLMRequest(
        prompt=native_prompt(str(last["content"]), system),
        endpoint="completions",
        model=request.model,
        max_tokens=request.max_tokens,
        params=request.params,
    )


@dataclass(slots=True)
class EndpointCapabilities:
    """What each endpoint is known to support, learnt once and kept by its owner.

    Give the same object to every batch sent to an endpoint (the pipeline owns one)
    so the native-batching probe runs once. ``None`` means not known yet.

    Packing is judged by its answers: a model that does not write the ``### ITEM``
    sections gets every item retried alone, so a packed call is a call lost. After
    ``pack_trials`` packed answers in a row of which not one item could be split out,
    the endpoint is taken not to pack (``supports_packing`` False) and its items go
    alone straight away; an answer that splits starts the count again.
    """

    native_batch: dict[str, bool] = field(default_factory=dict)
    packing: dict[str, bool] = field(default_factory=dict)
    pack_trials: int = 3
    pack_failures: dict[str, int] = field(default_factory=dict)  # packed answers in a row that did not split

    def supports_native(self, endpoint: str) -> bool | None:
        return self.native_batch.get(endpoint)

    def remember_native(self, endpoint: str, supported: bool) -> None:
        self.native_batch[endpoint] = supported

    def supports_packing(self, endpoint: str) -> bool | None:
        return self.packing.get(endpoint)

    def packed_answer(self, endpoint: str, split: bool) -> None:
        """Count one packed answer: ``split`` when at least one item could be cut out of it."""
        if split:
            self.pack_failures[endpoint] = 0
            self.packing[endpoint] = True
            return
        failures = self.pack_failures.get(endpoint, 0) + 1
        self.pack_failures[endpoint] = failures
        if failures >= self.pack_trials:
            self.packing[endpoint] = False


@dataclass(slots=True)
class BatchResult:
    """Answers (or errors) in input order, and what the batch cost.

    ``responses[i]`` is item i's own response (None when it failed), ``calls[i]`` the
    calls counted for it, ``served_by[i]`` the strategy that answered it.
    """

    results: list[str | None]
    errors: list[BaseException | None]
    calls_made: int = 0
    cache_hits: int = 0  # calls answered by a cache layer under the caller
    strategies: dict[str, int] = field(default_factory=dict)  # unique prompts served by each
    responses: list[LLMResponse | None] = field(default_factory=list)
    calls: list[int] = field(default_factory=list)
    served_by: list[str | None] = field(default_factory=list)

    @property
    def calls_saved(self) -> int:
        return len(self.results) - self.calls_made

    @property
    def ok(self) -> bool:
        return all(e is None for e in self.errors)

    def texts(self) -> list[str]:
        """The answers; raises the first item's error if any item failed."""
        for error in self.errors:
            if error is not None:
                raise error
        return [r if r is not None else "" for r in self.results]


class BatchArgs(TypedDict, total=False):
    """The keyword arguments of :func:`batch_llm_call` and :func:`batch_llm_call_results`
    (one typed record for both; every key is optional).

    ``client``: an :class:`~pytest_iterate.client.client.LLMClient` whose ``call`` is used
    when no caller is given. ``strategy`` (``auto``), ``concurrency`` (8 calls in flight),
    ``pack_size`` (8 items a packed or native request), ``pack_max_chars`` (2,000: longer
    prompts are never packed). ``max_tokens`` is per item (a packed request asks for
    ``max_tokens * items``); ``params`` (sampling), ``model`` and ``system`` go into every
    request. ``capabilities`` remembers what each endpoint supports (without it a fresh one
    is used, so an unknown endpoint is probed again); ``endpoint`` names the endpoint in it
    (default: the client's ``base_url``). ``batch_caller`` sends the requests that carry
    several items.
    """

    client: Any
    strategy: Strategy
    concurrency: int
    pack_size: int
    pack_max_chars: int
    max_tokens: int | None
    params: Mapping[str, Any] | None
    model: str | None
    capabilities: EndpointCapabilities | None
    endpoint: str | None
    system: str | None
    batch_caller: Caller | None


async def batch_llm_call(
    prompts: Sequence[str], caller: Caller | None = None, **kwargs: Unpack[BatchArgs]
) -> list[str]:
    """Answer every prompt; order preserved; raises the first item's error if any failed.
    See :func:`batch_llm_call_results` and :class:`BatchArgs`."""
    return (await batch_llm_call_results(prompts, caller, **kwargs)).texts()


async def batch_llm_call_results(
    prompts: Sequence[str], caller: Caller | None = None, **kwargs: Unpack[BatchArgs]
) -> BatchResult:
    """Answer every prompt, keeping each item's answer or error in place.

    ``caller`` is any :class:`~pytest_iterate.client.types.Caller` (the cached
    pipeline, say); the keyword arguments are :class:`BatchArgs`. A bad value is a
    :class:`~pytest_iterate.client.errors.ConfigError` naming it, before any call.
    """
    unknown = sorted(set(kwargs) - set(BatchArgs.__annotations__))
    if unknown:
        raise ConfigError(f"batch_llm_call: unknown argument(s) {', '.join(unknown)}")
    strategy = kwargs.get("strategy", "auto")
    concurrency, pack_size = kwargs.get("concurrency", 8), kwargs.get("pack_size", 8)
    if strategy not in STRATEGIES:
        raise ConfigError(f"strategy={strategy!r} is not valid; valid values: {', '.join(STRATEGIES)}")
    for name, value in (("concurrency", concurrency), ("pack_size", pack_size)):
        if not isinstance(value, int) or value < 1:
            raise ConfigError(f"{name}={value!r} must be a whole number >= 1")
    client = kwargs.get("client")
    if caller is None:
        if client is None:
            raise ConfigError("batch_llm_call needs a caller or a client")
        caller = client.call
    endpoint = kwargs.get("endpoint") or str(
        getattr(client, "base_url", None) or getattr(caller, "base_url", None) or "default"
    )
    capabilities = kwargs.get("capabilities")
    run = _BatchRun(
        caller=caller,
        batch_caller=kwargs.get("batch_caller") or caller,
        semaphore=asyncio.Semaphore(concurrency),
        max_tokens=kwargs.get("max_tokens"),
        params=dict(kwargs.get("params") or {}),
        model=kwargs.get("model"),
        capabilities=capabilities if capabilities is not None else EndpointCapabilities(),
        endpoint=endpoint,
        system=kwargs.get("system"),
    )
    pack_max_chars = kwargs.get("pack_max_chars", 2000)
    unique: list[str] = list(dict.fromkeys(prompts))
    answers = await run.answer(unique, strategy, pack_size, pack_max_chars)
    first = {p: i for i, p in reversed(list(enumerate(prompts)))}
    return BatchResult(
        results=[answers[p].text for p in prompts],
        errors=[answers[p].error for p in prompts],
        calls_made=run.calls,
        cache_hits=run.cache_hits,
        strategies=run.served,
        responses=[answers[p].response for p in prompts],
        calls=[run.calls_for.get(p, 0) if first[p] == i else 0 for i, p in enumerate(prompts)],
        served_by=[answers[p].strategy for p in prompts],
    )


@dataclass(slots=True)
class _Outcome:
    response: LLMResponse | None
    error: BaseException | None
    strategy: str

    @property
    def text(self) -> str | None:
        return self.response.text if self.response is not None else None


@dataclass(slots=True)
class _BatchRun:
    caller: Caller
    batch_caller: Caller
    semaphore: asyncio.Semaphore
    max_tokens: int | None
    params: dict[str, Any]
    model: str | None
    capabilities: EndpointCapabilities
    endpoint: str
    system: str | None = None
    calls: int = 0
    cache_hits: int = 0
    served: dict[str, int] = field(default_factory=dict)
    out: dict[str, _Outcome] = field(default_factory=dict)
    calls_for: dict[str, int] = field(default_factory=dict)

    async def answer(
        self, unique: list[str], strategy: Strategy, pack_size: int, pack_max_chars: int
    ) -> dict[str, _Outcome]:
        rest = unique
        if strategy in ("auto", "native") and len(unique) > 1:
            rest = await self._native_all(unique, pack_size)
            if strategy == "native":
                strategy = "packed"  # what a refusing endpoint falls back to
        if strategy in ("auto", "packed") and self.capabilities.supports_packing(self.endpoint) is False:
            strategy = "concurrent"  # the model does not answer packed prompts: send alone
        if strategy in ("auto", "packed"):
            short = [p for p in rest if len(p) <= pack_max_chars]
            long = [p for p in rest if len(p) > pack_max_chars]
            groups = [short[i : i + pack_size] for i in range(0, len(short), pack_size)]
            await asyncio.gather(*(self._packed(g) for g in groups), *(self._single(p) for p in long))
        else:
            await asyncio.gather(*(self._single(p) for p in rest))
        return self.out

    # -- strategies -----------------------------------------------------------
    async def _native_all(self, unique: list[str], pack_size: int) -> list[str]:
        """Serve what native batching can; return the prompts left for other strategies."""
        if self.capabilities.supports_native(self.endpoint) is False:
            return unique
        groups = [unique[i : i + pack_size] for i in range(0, len(unique), pack_size)]
        left: list[str] = []
        if self.capabilities.supports_native(self.endpoint) is None:
            first, groups = groups[0], groups[1:]  # the probe goes alone
            if not await self._native(first, probe=True):
                return unique
        results = await asyncio.gather(*(self._native(g, probe=False) for g in groups))
        for group, served in zip(groups, results, strict=True):
            if not served:
                left.extend(group)
        return left

    async def _native(self, group: list[str], *, probe: bool) -> bool:
        if len(group) == 1 and not probe:
            return False
        request = LLMRequest(
            prompt=tuple(native_prompt(p, self.system) for p in group),
            endpoint="completions",
            model=self.model,
            max_tokens=self.max_tokens,
            params=self.params,
        )
        try:
            response = await self._call(request, group[0], several=True)
        except (HTTPStatusError, BadResponse):
            self.capabilities.remember_native(self.endpoint, False)
            return False
        except IterateError:
            return False  # not an answer about support: try again another way, remember nothing
        texts = response.texts
        if texts is None or len(texts) != len(group):
            self.capabilities.remember_native(self.endpoint, False)
            return False
        self.capabilities.remember_native(self.endpoint, True)
        finishes = _choice_finishes(response, len(group))
        items = _shares(response, group, texts, finishes)
        for prompt, item in zip(group, items, strict=True):
            self._done(prompt, item, None, "native")
        return True

    async def _packed(self, group: list[str]) -> None:
        if len(group) == 1:
            await self._single(group[0])
            return
        request = LLMRequest(
            messages=(*self._system_messages(), {"role": "user", "content": pack_prompts(group)}),
            model=self.model,
            max_tokens=None if self.max_tokens is None else self.max_tokens * len(group),
            params=self.params,
        )
        try:
            response = await self._call(request, group[0], several=True)
        except ContextOverflow:  # too long together: halves, each packed again
            half = len(group) // 2
            await asyncio.gather(self._packed(group[:half]), self._packed(group[half:]))
            return
        except IterateError:
            await asyncio.gather(*(self._single(p) for p in group))
            return
        parts = split_packed_answer(response.text, len(group))
        self.capabilities.packed_answer(self.endpoint, any(p is not None for p in parts))
        if response.partial:  # cut short: the last item found may be incomplete
            found = [i for i, p in enumerate(parts) if p is not None]
            if found:
                parts[found[-1]] = None
        answered = [(prompt, part) for prompt, part in zip(group, parts, strict=True) if part is not None]
        if answered:
            prompts = [p for p, _ in answered]
            items = _shares(
                response, prompts, [t for _, t in answered], ["stop"] * len(answered), whole=group
            )
            for prompt, item in zip(prompts, items, strict=True):
                self._done(prompt, item, None, "packed")
        retry = [prompt for prompt, part in zip(group, parts, strict=True) if part is None]
        await asyncio.gather(*(self._single(p) for p in retry))

    async def _single(self, prompt: str) -> None:
        request = LLMRequest(
            messages=(*self._system_messages(), {"role": "user", "content": prompt}),
            model=self.model,
            max_tokens=self.max_tokens,
            params=self.params,
        )
        try:
            response = await self._call(request, prompt, several=False)
        except Exception as exc:  # kept in place: one failing item must not lose the others
            self._done(prompt, None, exc, "concurrent")
            return
        self._done(prompt, response, None, "concurrent")

    # -- plumbing -------------------------------------------------------------
    def _system_messages(self) -> tuple[Message, ...]:
        return () if self.system is None else ({"role": "system", "content": self.system},)

    async def _call(self, request: LLMRequest, owner: str, *, several: bool) -> LLMResponse:
        """One call, counted for ``owner`` (the first item it serves): the requests the caller
        reports it sent (see :func:`report_sends`), else one."""
        caller = self.batch_caller if several else self.caller
        box = [0, 0]
        token = _SENDS.set(box)
        try:
            async with self.semaphore:
                response = await caller(request)
        finally:
            _SENDS.reset(token)
            made = box[0] if box[1] else 1
            self.calls += made
            self.calls_for[owner] = self.calls_for.get(owner, 0) + made
        if response.cache_tier is not None:
            self.cache_hits += 1
        return response

    def _done(
        self, prompt: str, response: LLMResponse | None, error: BaseException | None, strategy: str
    ) -> None:
        self.out[prompt] = _Outcome(response, error, strategy)
        self.served[strategy] = self.served.get(strategy, 0) + 1


def _choice_finishes(response: LLMResponse, n: int) -> list[str | None]:
    """Each choice's finish reason of a list-prompt answer (the response's own when unknown)."""
    finishes: list[str | None] = [response.finish_reason] * n
    raw = response.raw or {}
    for choice in raw.get("choices") or ():
        if isinstance(choice, dict):
            index, finish = choice.get("index"), choice.get("finish_reason")
            if isinstance(index, int) and 0 <= index < n and (finish is None or isinstance(finish, str)):
                finishes[index] = finish
    return finishes


def _split(total: int, weights: list[int]) -> list[int]:
    """``total`` split in proportion to ``weights`` (largest remainders), summing to ``total``."""
    whole = sum(weights)
    if whole <= 0:
        weights, whole = [1] * len(weights), len(weights)
    exact = [total * w / whole for w in weights]
    out = [int(x) for x in exact]
    order = sorted(range(len(weights)), key=lambda i: exact[i] - out[i], reverse=True)
    for i in order[: total - sum(out)]:
        out[i] += 1
    return out


def _shares(
    response: LLMResponse,
    prompts: list[str],
    texts: list[str],
    finishes: list[str | None],
    *,
    whole: list[str] | None = None,
) -> list[LLMResponse]:
    """One response per item of a call that answered several: its text, the call's timings,
    its share of the call's usage (by the characters of its prompt and of its answer).

    ``whole`` is every prompt the call carried (the prompt tokens are shared among them
    all, answered or not; the items answered here get their own shares)."""
    usage = response.usage
    shares: list[Usage | None] = [None] * len(prompts)
    if usage is not None:
        carried = whole or prompts
        prompt_split = dict(zip(carried, _split(usage.prompt_tokens, [len(p) for p in carried]), strict=True))
        completion_split = _split(usage.completion_tokens, [len(t) for t in texts])
        shares = [Usage(prompt_split[p], c) for p, c in zip(prompts, completion_split, strict=True)]
    return [
        LLMResponse(
            text=text,
            finish_reason=finish,
            usage=share,
            model=response.model,
            ttft_s=response.ttft_s,
            total_s=response.total_s,
            attempts=response.attempts,
            cache_tier=response.cache_tier,
            wire_s=response.wire_s,
        )
        for text, finish, share in zip(texts, finishes, shares, strict=True)
    ]

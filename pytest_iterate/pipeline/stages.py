"""The pipeline's stages: small objects run in order over one :class:`StageContext`.

A stage is anything with a ``name`` and ``async def __call__(ctx) -> None`` (the
:class:`Stage` protocol). The six default stages, in order:

``prompt_build``   design request -> chat :class:`LLMRequest` (:class:`PromptBuildStage`)
``cache_lookup``   the cache key, and the stored answer on a hit (:class:`CacheLookupStage`)
``token_guard``    fit prompt + max_tokens into the context window (:class:`TokenGuardStage`)
``llm_call``       the call (skipped on a hit); identical misses in flight share one call
``post_process``   code extraction + validation in the CPU worker pool (:class:`PostProcessStage`)
``store``          the artifact row in SQLite (:class:`StoreStage`)

Cache and token guard are the caller layers a user composes around a client,
``CachingCaller(GuardingCaller(client, guard), cache)``: the pipeline builds that
stack (:attr:`Pipeline.caller <pytest_iterate.pipeline.runner.Pipeline.caller>`)
and the three middle stages run its phases one at a time, so each is timed apart
and there is one implementation of each rule:

``cache_lookup``   ``CachingCaller.lookup`` -> ``ctx.lookup`` (key, hit)
``token_guard``    ``GuardingCaller.plan`` -> ``ctx.plan`` (truncate / split / shrink /
                   refuse happen here; ``ContextOverflow`` fails the request before a send)
``llm_call``       ``CachingCaller.fetch`` (single flight, re-check, store) around
                   ``GuardingCaller.send(ctx.plan)`` (pieces, learning, one retry after a
                   context-length error, join, ``length`` flag); without a guard the
                   request goes to ``services.call`` as it is, without a cache it is
                   sent directly. With ``services.batcher`` (``batch_size > 1``) a
                   planned request that can share a call goes to the batch collector
                   instead and waits for its own answer (see
                   :mod:`pytest_iterate.pipeline.batching`); ``ctx.extra["batch"]`` says
                   how many went together and what answered it

A stage that has nothing to do (``llm_call`` after a cache hit, ``token_guard``
without a guard) returns at once; it is still timed, so every request has all six
stage timings. Stages get the pipeline's parts from ``ctx.services``, so replacing
one is a list edit: ``replace_stage(default_stages(), PostProcessStage(my_extractor))``;
``insert_after(stages, "post_process", MyStage())`` adds one. A replacement for a
middle stage keeps the same hand-over: ``cache_lookup`` leaves ``ctx.cache_key`` (and
``ctx.lookup`` when there is a cache), ``token_guard`` leaves ``ctx.plan`` (no plan: the
request is sent unguarded), and a stage that answers puts the answer in
``ctx.response`` with :meth:`StageContext.answer`.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from pytest_iterate.batch.collector import BatchCollector
from pytest_iterate.cache.keys import KeyBuilder
from pytest_iterate.cache.layer import CacheLookup, CachingCaller
from pytest_iterate.client.types import Caller, GuardWarning, LLMRequest, LLMResponse
from pytest_iterate.pipeline.batching import batchable_request, finish_item
from pytest_iterate.pipeline.design import DesignRequest
from pytest_iterate.pipeline.extract import Artifact, extract_artifact
from pytest_iterate.pipeline.store import ArtifactRecord
from pytest_iterate.tokens.layer import GuardingCaller, GuardPlan

if TYPE_CHECKING:
    from pytest_iterate.client.config import IterateConfig
    from pytest_iterate.client.metrics import IterateMetrics
    from pytest_iterate.client.telemetry import StageRecorder
    from pytest_iterate.pipeline.prompts import PromptBuilder
    from pytest_iterate.pipeline.store import ArtifactStore
    from pytest_iterate.pipeline.workers import WorkerPool

__all__ = [
    "STAGE_NAMES",
    "CacheLookupStage",
    "LLMCallStage",
    "PostProcessStage",
    "PromptBuildStage",
    "Services",
    "Stage",
    "StageContext",
    "StoreStage",
    "TokenGuardStage",
    "default_stages",
    "insert_after",
    "replace_stage",
]

STAGE_NAMES = ("prompt_build", "cache_lookup", "token_guard", "llm_call", "post_process", "store")

Extractor = Callable[[str, str], Artifact]


@runtime_checkable
class Stage(Protocol):
    """One named step of the pipeline."""

    name: str

    async def __call__(self, ctx: StageContext) -> None: ...


@dataclass(slots=True)
class Services:
    """The parts a stage may use; owned by the :class:`~pytest_iterate.pipeline.runner.Pipeline`.

    ``call`` is the client's one-request call (under the guard and the cache);
    ``guard`` the :class:`GuardingCaller` over ``call``, or None (no guard); ``cache``
    the :class:`CachingCaller` over the guard (or over ``call``), or None (no cache);
    ``batcher`` the batch collector between them, or None (``batch_size`` 1);
    ``keys`` builds the cache key of a request for ``base_url`` and ``model`` (the
    key is reported even without a cache); ``store`` may be None (nothing written).
    """

    config: IterateConfig
    builder: PromptBuilder
    call: Caller
    pool: WorkerPool
    base_url: str
    model: str
    cache: CachingCaller | None = None
    guard: GuardingCaller | None = None
    store: ArtifactStore | None = None
    metrics: IterateMetrics | None = None
    batcher: BatchCollector | None = None
    keys: KeyBuilder = field(init=False)

    def __post_init__(self) -> None:
        self.keys = KeyBuilder(self.base_url, self.model)


@dataclass(slots=True)
class StageContext:
    """What one request carries through the stages."""

    request: DesignRequest
    index: int
    run_id: str
    services: Services
    recorder: StageRecorder
    llm_request: LLMRequest | None = None
    response: LLMResponse | None = None
    artifact: Artifact | None = None
    warnings: list[GuardWarning] = field(default_factory=list)
    cache_key: str | None = None
    cache_tier: str | None = None
    lookup: CacheLookup | None = None  # what the cache found (None: no cache)
    plan: GuardPlan | None = None  # what the token guard planned (None: no guard, or a hit)
    coalesced: bool = False
    llm_calls: int = 0  # upstream calls this request made itself
    extra: dict[str, Any] = field(default_factory=dict)  # free room for custom stages

    def warn(self, warning: GuardWarning) -> None:
        if warning not in self.warnings:
            self.warnings.append(warning)

    def answer(self, response: LLMResponse) -> None:
        """Take ``response`` as the request's answer (its warnings become the request's)."""
        self.response = response
        if response.cache_tier is not None:
            self.cache_tier = response.cache_tier
        for warning in response.warnings:
            self.warn(warning)


class PromptBuildStage:
    name = "prompt_build"

    async def __call__(self, ctx: StageContext) -> None:
        ctx.llm_request = ctx.services.builder.build(ctx.request)


class CacheLookupStage:
    """The cache key, and the answer on a hit (cacheable requests only): ``CachingCaller.lookup``."""

    name = "cache_lookup"

    async def __call__(self, ctx: StageContext) -> None:
        s = ctx.services
        request = ctx.llm_request
        assert request is not None, "cache_lookup needs prompt_build first"
        if s.cache is None:
            ctx.cache_key = s.keys(request)
            return
        found = await s.cache.lookup(request)
        ctx.lookup, ctx.cache_key = found, found.key
        if found.hit is not None:
            ctx.answer(found.hit)


class TokenGuardStage:
    """The token guard's plan for the request: ``GuardingCaller.plan`` (may refuse)."""

    name = "token_guard"

    async def __call__(self, ctx: StageContext) -> None:
        request = ctx.llm_request
        assert request is not None, "token_guard needs prompt_build first"
        guard = ctx.services.guard
        if guard is None or ctx.response is not None:
            return
        ctx.plan = await guard.plan(request)
        for warning in ctx.plan.warnings:
            ctx.warn(warning)


class LLMCallStage:
    """The upstream call: ``CachingCaller.fetch`` around ``GuardingCaller.send``.

    Identical cacheable misses in flight share one upstream call (the followers
    report ``coalesced`` and no calls of their own); ``ctx.llm_calls`` counts the
    requests this request itself sent (a split sends several, a retry one more).
    """

    name = "llm_call"

    async def __call__(self, ctx: StageContext) -> None:
        if ctx.response is not None:
            return
        request = ctx.llm_request
        assert request is not None, "llm_call needs prompt_build first"
        s = ctx.services
        send = _sender(ctx, request)
        found = ctx.lookup
        if s.cache is None or found is None:
            ctx.answer(await send())
            return
        try:
            response = await s.cache.fetch(found, send)
        finally:
            ctx.coalesced = found.coalesced
        ctx.answer(response)


def _sender(ctx: StageContext, request: LLMRequest) -> Callable[[], Awaitable[LLMResponse]]:
    """The send to the layer below the cache, counting into ``ctx.llm_calls``."""
    s = ctx.services
    guard, plan = s.guard, ctx.plan
    batched = batchable_request(s.batcher, request, plan if guard is not None else None)
    if batched is not None and s.batcher is not None and not request.stream:
        batcher = s.batcher

        async def send_batched() -> LLMResponse:
            item = await batcher.submit(batched)
            ctx.llm_calls += item.calls
            ctx.extra["batch"] = {"size": item.batch_size, "strategy": item.strategy}
            return finish_item(item, plan if guard is not None else None, guard)

        return send_batched

    async def send() -> LLMResponse:
        if guard is None or plan is None:
            ctx.llm_calls += 1
            return await s.call(request)
        try:
            return await guard.send(plan)
        finally:
            ctx.llm_calls += plan.sends

    return send


class PostProcessStage:
    """Extracts and validates the code in the worker pool (``extractor(text, language)``).

    Results of the default (pure) extractor are memoised per stage in a bounded LRU
    keyed by (answer text, language), as the seeds ask for the code extractor: a
    duplicate or cached answer skips the pool. A custom extractor is not memoised
    unless ``memo_size`` is given (it may not be a pure function).
    """

    name = "post_process"

    def __init__(self, extractor: Extractor = extract_artifact, *, memo_size: int | None = None) -> None:
        self.extractor = extractor
        if memo_size is None:
            memo_size = 1024 if extractor is extract_artifact else 0
        self.memo_size = memo_size
        self._memo: OrderedDict[tuple[str, str], Artifact] = OrderedDict()

    async def __call__(self, ctx: StageContext) -> None:
        if ctx.response is None:
            return
        for warning in ctx.response.warnings:
            ctx.warn(warning)
        key = (ctx.response.text, ctx.request.language)
        artifact = self._memo.get(key) if self.memo_size else None
        if artifact is None:
            artifact = await ctx.services.pool.run(self.extractor, *key)
            if self.memo_size:
                self._memo[key] = artifact
                if len(self._memo) > self.memo_size:
                    self._memo.popitem(last=False)
        else:
            self._memo.move_to_end(key)
        ctx.artifact = artifact
        for warning in artifact.warnings:
            ctx.warn(warning)


class StoreStage:
    """Writes the artifact row (with the timings of the stages before it) off the event loop."""

    name = "store"

    async def __call__(self, ctx: StageContext) -> None:
        store = ctx.services.store
        if store is None or ctx.response is None:
            return

        a = ctx.artifact
        await store.put(
            ArtifactRecord(
                request_id=ctx.request.id,
                request=ctx.request.to_json(),
                code=a.code if a else None,
                language=a.language if a else None,
                valid=a.valid if a else None,
                syntax_error_line=a.syntax_error_line if a else None,
                syntax_error=a.syntax_error if a else None,
                warnings=[w.to_json() for w in ctx.warnings],
                timings=[t.to_json() for t in ctx.recorder.timings],
                cache_key=ctx.cache_key,
                cache_tier=ctx.cache_tier,
                run_id=ctx.run_id,
                created_s=time.time(),
            )
        )


def default_stages(extractor: Extractor = extract_artifact) -> list[Stage]:
    """The six stages in order (a fresh list each call)."""
    return [
        PromptBuildStage(),
        CacheLookupStage(),
        TokenGuardStage(),
        LLMCallStage(),
        PostProcessStage(extractor),
        StoreStage(),
    ]


def replace_stage(stages: Sequence[Stage], new: Stage) -> list[Stage]:
    """A copy of ``stages`` with the stage named ``new.name`` replaced by ``new``."""
    names = [s.name for s in stages]
    if new.name not in names:
        raise ValueError(f"no stage named {new.name!r}; stages: {', '.join(names)}")
    return [new if s.name == new.name else s for s in stages]


def insert_after(stages: Sequence[Stage], after: str, new: Stage) -> list[Stage]:
    """A copy of ``stages`` with ``new`` inserted after the stage named ``after``."""
    names = [s.name for s in stages]
    if after not in names:
        raise ValueError(f"no stage named {after!r}; stages: {', '.join(names)}")
    out = list(stages)
    out.insert(names.index(after) + 1, new)
    return out

"""The pipeline's stages: small objects run in order over one :class:`StageContext`.

A stage is anything with a ``name`` and ``async def __call__(ctx) -> None`` (the
:class:`Stage` protocol). The six default stages, in order:

``prompt_build``   design request -> chat :class:`LLMRequest` (:class:`PromptBuildStage`)
``cache_lookup``   the cache key, and the stored answer on a hit (:class:`CacheLookupStage`)
``token_guard``    fit prompt + max_tokens into the context window (:class:`TokenGuardStage`)
``llm_call``       the call (skipped on a hit); identical misses in flight share one call
``post_process``   code extraction + validation in the CPU worker pool (:class:`PostProcessStage`)
``store``          the artifact row in SQLite (:class:`StoreStage`)

A stage that has nothing to do (``llm_call`` after a cache hit, ``token_guard``
without a guard) returns at once; it is still timed, so every request has all six
stage timings. Stages get the pipeline's parts from ``ctx.services``, so replacing
one is a list edit: ``replace_stage(default_stages(), PostProcessStage(my_extractor))``.
"""

from __future__ import annotations

import dataclasses
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from pytest_iterate.client.errors import HTTPStatusError
from pytest_iterate.client.types import GuardWarning, LLMRequest, LLMResponse, Usage
from pytest_iterate.pipeline.design import DesignRequest
from pytest_iterate.pipeline.extract import Artifact, extract_artifact

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

    ``call`` is the one-request LLM call (``LLMClient.call`` or any Caller); ``cache``
    a ``ResponseCache`` or None; ``guard`` a ``TokenGuard`` or None; ``single_flight``
    coalesces identical misses; ``store`` may be None (nothing written).
    """

    config: IterateConfig
    builder: PromptBuilder
    call: Callable[..., Any]
    pool: WorkerPool
    base_url: str
    model: str
    cache: Any | None = None
    guard: Any | None = None
    single_flight: Any | None = None
    store: ArtifactStore | None = None
    metrics: IterateMetrics | None = None


@dataclass(slots=True)
class StageContext:
    """What one request carries through the stages."""

    request: DesignRequest
    index: int
    run_id: str
    services: Services
    recorder: StageRecorder
    llm_request: LLMRequest | None = None
    sent_requests: list[LLMRequest] = field(default_factory=list)  # after the guard (split: several)
    response: LLMResponse | None = None
    artifact: Artifact | None = None
    warnings: list[GuardWarning] = field(default_factory=list)
    cache_key: str | None = None
    cache_tier: str | None = None
    coalesced: bool = False
    guarded: Any | None = None  # the token guard's GuardedRequest (decisions, action)
    llm_calls: int = 0  # upstream calls this request made itself
    extra: dict[str, Any] = field(default_factory=dict)  # free room for custom stages

    def warn(self, warning: GuardWarning) -> None:
        if warning not in self.warnings:
            self.warnings.append(warning)


class PromptBuildStage:
    name = "prompt_build"

    async def __call__(self, ctx: StageContext) -> None:
        ctx.llm_request = ctx.services.builder.build(ctx.request)


class CacheLookupStage:
    """Computes the cache key and answers from the cache on a hit (cacheable requests only)."""

    name = "cache_lookup"

    async def __call__(self, ctx: StageContext) -> None:
        s = ctx.services
        assert ctx.llm_request is not None, "cache_lookup needs prompt_build first"
        from pytest_iterate.cache.keys import cache_key

        ctx.cache_key = cache_key(ctx.llm_request, base_url=s.base_url, default_model=s.model)
        if s.cache is None or not s.cache.cacheable(ctx.llm_request):
            return
        hit = await s.cache.get(ctx.cache_key)
        if hit is not None:
            if s.guard is not None and hasattr(s.guard, "flag_length"):
                hit = s.guard.flag_length(hit)  # a stored answer cut at max_tokens stays flagged
            ctx.response = hit
            ctx.cache_tier = hit.cache_tier


class TokenGuardStage:
    """Applies the token guard's policy; a split gives several requests, run in order."""

    name = "token_guard"

    async def __call__(self, ctx: StageContext) -> None:
        assert ctx.llm_request is not None, "token_guard needs prompt_build first"
        if ctx.response is not None:
            return
        guard = ctx.services.guard
        if guard is None:
            ctx.sent_requests = [ctx.llm_request]
            return
        guarded = guard.apply(ctx.llm_request, endpoint_key=ctx.services.base_url)
        ctx.guarded = guarded
        for warning in getattr(guarded, "warnings", ()) or ():
            ctx.warn(warning)
        chunks = getattr(guarded, "requests", None) or getattr(guarded, "chunks", None)
        ctx.sent_requests = list(chunks) if chunks else [guarded.request]


class LLMCallStage:
    """Sends the request(s); identical cacheable misses in flight share one upstream call."""

    name = "llm_call"

    async def __call__(self, ctx: StageContext) -> None:
        if ctx.response is not None:
            return
        s = ctx.services
        requests = ctx.sent_requests or ([ctx.llm_request] if ctx.llm_request is not None else [])
        cache = s.cache
        shareable = (
            cache is not None
            and s.single_flight is not None
            and ctx.cache_key is not None
            and ctx.llm_request is not None
            and cache.cacheable(ctx.llm_request)
        )
        if not shareable:
            ctx.response = await self._send(ctx, requests)
            return
        key = ctx.cache_key
        assert key is not None and ctx.llm_request is not None and cache is not None
        original = ctx.llm_request

        async def upstream() -> LLMResponse:
            again: LLMResponse | None = await cache.get(key, record=False)  # stored meanwhile?
            if again is not None:
                return again
            response = await self._send(ctx, requests)
            response.cache_key = key
            await cache.put(key, original, response)
            return response

        single_flight = s.single_flight
        assert single_flight is not None
        ctx.coalesced = single_flight.in_flight(key)
        shared: LLMResponse = await single_flight.run(key, upstream)
        ctx.response = dataclasses.replace(shared, warnings=list(shared.warnings), chunks=list(shared.chunks))
        if ctx.response.cache_tier is not None:
            ctx.cache_tier = ctx.response.cache_tier
            ctx.coalesced = False

    async def _send(self, ctx: StageContext, requests: Sequence[LLMRequest]) -> LLMResponse:
        try:
            return await self._send_all(ctx, requests)
        except HTTPStatusError as exc:
            retry = _relearn_after_context_error(ctx, exc)
            if retry is None:
                raise
        return await self._send_all(ctx, retry)  # once, with the tightened bound

    @staticmethod
    async def _send_all(ctx: StageContext, requests: Sequence[LLMRequest]) -> LLMResponse:
        call = ctx.services.call
        guard = ctx.services.guard
        decisions = getattr(ctx.guarded, "decisions", ()) or ()
        responses: list[LLMResponse] = []
        for i, request in enumerate(requests):
            ctx.llm_calls += 1  # counted when sent, so a failed call counts too
            response: LLMResponse = await call(request)
            if guard is not None:
                usage = response.usage
                if usage is not None and i < len(decisions) and hasattr(guard, "learner"):
                    guard.learner.observe(
                        ctx.services.base_url, decisions[i].prompt_tokens, usage.prompt_tokens
                    )
                if hasattr(guard, "flag_length"):
                    response = guard.flag_length(response)
            responses.append(response)
        if len(responses) == 1:
            return responses[0]
        return _join(responses)


def _relearn_after_context_error(ctx: StageContext, exc: HTTPStatusError) -> list[LLMRequest] | None:
    """After a 400 context-length error: tighten the guard's bound and re-guard, or None."""
    guard = ctx.services.guard
    if guard is None or exc.status != 400 or ctx.llm_request is None or ctx.extra.get("context_retry"):
        return None
    from pytest_iterate.tokens.windows import is_context_error_text, parse_context_error

    text = exc.body.decode("utf-8", "replace") + " " + str(exc)
    if exc.code != "context_length_exceeded" and not is_context_error_text(text):
        return None
    ctx.extra["context_retry"] = True
    decisions = getattr(ctx.guarded, "decisions", ()) or ()
    ours = max((d.prompt_tokens for d in decisions), default=0)
    key = ctx.services.base_url
    guard.learner.learn_from_error(
        key, ours, parse_context_error(text), max_tokens=ctx.llm_request.max_tokens
    )
    guarded = guard.apply(ctx.llm_request, endpoint_key=key)  # may raise ContextOverflow
    ctx.guarded = guarded
    for warning in guarded.warnings:
        ctx.warn(warning)
    return list(guarded.requests) or [guarded.request]


def _join(responses: Sequence[LLMResponse]) -> LLMResponse:
    """The answers of split chunks combined in order."""
    prompt = sum(r.usage.prompt_tokens for r in responses if r.usage)
    completion = sum(r.usage.completion_tokens for r in responses if r.usage)
    warnings: list[GuardWarning] = []
    for r in responses:
        warnings.extend(w for w in r.warnings if w not in warnings)
    last = responses[-1]
    return LLMResponse(
        text="\n".join(r.text for r in responses),
        finish_reason=last.finish_reason,
        usage=Usage(prompt, completion) if any(r.usage for r in responses) else None,
        model=last.model,
        ttft_s=responses[0].ttft_s,
        total_s=sum(r.total_s for r in responses),
        attempts=sum(r.attempts for r in responses),
        warnings=warnings,
    )


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
        from pytest_iterate.pipeline.store import ArtifactRecord

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

"""The design-iteration pipeline: design request in, stored artifact out.

>>> # doctest: +SKIP
>>> async with Pipeline.from_config(IterateConfig.load()) as pipeline:
...     results = await pipeline.run_many(load_workload(standard_workload_path()), concurrency=10)
...     print(sum(r.ok for r in results), results[0].artifact.valid)

``run`` never raises for a failing request (cancellation aside): the result has
``ok=False`` and the error in ``.error`` (an :class:`IterateError` such as ``Busy`` or
``RateLimited``, or whatever a custom stage raised). ``run_many`` runs at most
``concurrency`` requests at once (default ``config.max_concurrent_requests``) and
returns the results in input order; one failure never loses the others.

Timing fields of a :class:`PipelineResult` (seconds, monotonic): ``total_s`` from
the start of the first stage to the end of the last, ``llm_s`` the ``llm_call``
stage (waiting for a shared in-flight call included; ~0 on a cache hit) and
``wire_s`` the time inside HTTP attempts (failed attempts included; 0 on a cache hit) and
``overhead_s = total_s - wire_s``: the pipeline's own cost, every wait inside it included
(the throttle's queue, the backoff between retries, the stages around the call).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from pytest_iterate.cache.layer import CachingCaller
from pytest_iterate.cache.tiered import ResponseCache
from pytest_iterate.client.client import LLMClient
from pytest_iterate.client.metrics import IterateMetrics
from pytest_iterate.client.pacing import estimate_tokens
from pytest_iterate.client.telemetry import StageRecorder, StageTiming, enable_json_logs, get_logger
from pytest_iterate.client.types import Caller, GuardWarning, LLMRequest, Usage
from pytest_iterate.pipeline.batching import BatchingCaller, batch_collector
from pytest_iterate.pipeline.design import DesignRequest
from pytest_iterate.pipeline.extract import Artifact
from pytest_iterate.pipeline.prompts import PromptBuilder
from pytest_iterate.pipeline.stages import Services, Stage, StageContext, default_stages
from pytest_iterate.pipeline.store import ArtifactStore
from pytest_iterate.pipeline.workers import WorkerPool
from pytest_iterate.pipeline.workload import load_workload
from pytest_iterate.tokens.counter import TokenCounter
from pytest_iterate.tokens.guard import TokenGuard
from pytest_iterate.tokens.layer import GuardingCaller

if TYPE_CHECKING:
    from pytest_iterate.client.config import IterateConfig

__all__ = ["Pipeline", "PipelineResult"]


@dataclass(slots=True)
class PipelineResult:
    """The outcome of one design request (see the module doc for the timing fields)."""

    request_id: str
    index: int
    ok: bool
    error: BaseException | None
    text: str
    artifact: Artifact | None
    stages: list[StageTiming]
    cache_tier: str | None
    cache_key: str | None
    usage: Usage | None
    ttft_s: float | None
    llm_s: float
    wire_s: float
    total_s: float
    overhead_s: float
    attempts: int
    warnings: list[GuardWarning]
    complete: bool
    partial: bool
    coalesced: bool = False  # joined an identical call already in flight (no call of its own)
    llm_calls: int = 0  # upstream calls this request made itself
    finish_reason: str | None = None
    run_id: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def stage(self, name: str) -> StageTiming | None:
        return next((t for t in self.stages if t.name == name), None)

    def raise_for_error(self) -> PipelineResult:
        if self.error is not None:
            raise self.error
        return self


class Pipeline:
    """Runs the stages for one design request (:meth:`run`) or many (:meth:`run_many`).

    Parts not given are built from ``config``: ``client`` an ``LLMClient`` (or pass
    any Caller / object with ``.call``), ``store`` an :class:`ArtifactStore` at
    ``config.store_path``. ``cache`` (a :class:`ResponseCache`) and ``guard`` (a
    :class:`TokenGuard`) stay off unless given; :meth:`from_config` builds all of
    them. Parts the pipeline built are closed by :meth:`aclose`; parts passed in are
    left open.

    The pipeline composes cache and guard around the client the way a user would,
    ``CachingCaller(GuardingCaller(client, guard), cache)``, and the stages run the
    phases of those layers (see :mod:`pytest_iterate.pipeline.stages`). :attr:`caller`
    is that stack as one Caller: ``await pipeline.caller(llm_request)`` is the same
    cache, guard and client for a request built by hand. Entering the pipeline
    (``async with``) runs the guard's one probe of the endpoint, so no request waits for it.
    With ``config.batch_size > 1`` a batch collector sits between cache and guard
    (:attr:`batcher`, see :mod:`pytest_iterate.pipeline.batching`), in the stages and in
    :attr:`caller`.

    A client with a throttle (an ``LLMClient``) counts the tokens of each request
    against the endpoint's token rate limit with the guard's counter (prompt +
    ``max_tokens``), unless it was given its own ``token_cost``.
    """

    def __init__(
        self,
        config: IterateConfig,
        *,
        client: Any | None = None,
        cache: ResponseCache | None = None,
        guard: TokenGuard | None = None,
        store: ArtifactStore | None = None,
        metrics: IterateMetrics | None = None,
        stages: Sequence[Stage] | None = None,
        logger: logging.Logger | None = None,
        builder: PromptBuilder | None = None,
        pool: WorkerPool | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.metrics = metrics if metrics is not None else IterateMetrics()
        self._owned: list[Any] = []
        self._log_handler: logging.Handler | None = None
        if logger is None and config.json_logs:
            logger = get_logger()
            self._log_handler = enable_json_logs(logger=logger)
        self.logger = logger
        if client is None:
            client = LLMClient(config, metrics=self.metrics)
            self._owned.append(client)
        self.client = client
        call: Caller = getattr(client, "call", client)
        base_url = str(getattr(client, "base_url", config.base_url))
        model = str(getattr(client, "model", config.model))
        if store is None:
            store = ArtifactStore.from_config(config)
            self._owned.append(store)
        self.store = store
        if pool is None:
            pool = WorkerPool(config.cpu_worker_pool_size)
            self._owned.append(pool)
        self.pool = pool
        self.cache = cache
        self.guard = guard
        guarding: GuardingCaller | None = None
        if guard is not None:  # an LLMClient is probed for its window and exact counts
            if getattr(client, "transport", None) is not None and hasattr(client, "config"):
                guarding = GuardingCaller.for_client(client, guard)
            else:
                guarding = GuardingCaller(call, guard, endpoint_key=base_url)
        if guard is not None and getattr(client, "token_cost", None) is estimate_tokens:
            client.token_cost = _guard_token_cost(guard)
        self.batcher = (
            batch_collector(
                call,
                guarding,
                batch_size=config.batch_size,
                window_s=config.batch_window_s,
                strategy=config.batch_strategy,
                endpoint=base_url,
            )
            if config.batch_size > 1
            else None
        )
        below_cache: Caller = guarding if guarding is not None else call
        if self.batcher is not None:
            below_cache = BatchingCaller(call, guarding, self.batcher)
        caching = (
            CachingCaller(below_cache, cache, base_url=base_url, default_model=model)
            if cache is not None
            else None
        )
        self.caller: Caller = caching if caching is not None else below_cache
        self.services = Services(
            config=config,
            builder=builder or PromptBuilder(default_max_tokens=config.default_max_tokens),
            call=call,
            pool=pool,
            base_url=base_url,
            model=model,
            cache=caching,
            guard=guarding,
            store=store,
            metrics=self.metrics,
            batcher=self.batcher,
        )
        self.stages: list[Stage] = list(stages) if stages is not None else default_stages()
        self._clock = clock
        self._closed = False

    @classmethod
    def from_config(cls, config: IterateConfig, **parts: Any) -> Pipeline:
        """A pipeline with the default client, cache (if ``cache_enabled``), token guard and store.

        Any part can still be given in ``parts`` (``client=``, ``store=``, ...).
        """
        metrics = parts.pop("metrics", None) or IterateMetrics()
        owned: list[Any] = []
        if "cache" not in parts and config.cache_enabled:
            parts["cache"] = ResponseCache(config, metrics)
            owned.append(parts["cache"])
        if "guard" not in parts:
            counter = TokenCounter()  # one memo for the builder's and the guard's counts
            parts["guard"] = TokenGuard(config, metrics=metrics, counter=counter)
            parts.setdefault(
                "builder", PromptBuilder(default_max_tokens=config.default_max_tokens, counter=counter)
            )
        pipeline = cls(config, metrics=metrics, **parts)
        pipeline._owned.extend(owned)
        return pipeline

    # -- running ------------------------------------------------------------------
    async def run(
        self, request: DesignRequest, *, index: int = 0, run_id: str | None = None
    ) -> PipelineResult:
        """Run every stage for ``request``; failures land in the result, never raised."""
        if self._closed:
            raise RuntimeError("the pipeline is closed")
        recorder = StageRecorder(self.metrics, self.logger, request.id)
        ctx = StageContext(request, index, run_id or uuid.uuid4().hex[:12], self.services, recorder)
        error: BaseException | None = None
        start = self._clock()
        try:
            for stage in self.stages:
                with recorder.stage(stage.name):
                    await stage(ctx)
        except Exception as exc:
            error = exc
        total = self._clock() - start
        return _result(ctx, error, total)

    async def run_many(
        self, requests: Iterable[DesignRequest], *, concurrency: int | None = None, run_id: str | None = None
    ) -> list[PipelineResult]:
        """Run all ``requests`` with at most ``concurrency`` at once; results in input order."""
        items = list(requests)
        limit = concurrency or self.config.max_concurrent_requests
        if limit < 1:
            raise ValueError(f"concurrency={limit!r} must be >= 1")
        run_id = run_id or uuid.uuid4().hex[:12]
        results: list[PipelineResult | None] = [None] * len(items)
        next_index = iter(range(len(items)))

        async def worker() -> None:
            for i in next_index:
                results[i] = await self.run(items[i], index=i, run_id=run_id)

        await asyncio.gather(*(worker() for _ in range(min(limit, len(items)))))
        return [r for r in results if r is not None]

    async def run_workload(
        self, path: str | Path, *, concurrency: int | None = None, run_id: str | None = None
    ) -> list[PipelineResult]:
        """Load a workload file (all or nothing: a bad line raises ``WorkloadError`` before any
        request is sent or stored) and run it with :meth:`run_many`."""

        return await self.run_many(load_workload(path), concurrency=concurrency, run_id=run_id)

    # -- lifecycle ----------------------------------------------------------------
    async def aclose(self) -> None:
        """Flush the cache's queued disk writes, close what the pipeline built (client, cache,
        store, worker pool); idempotent."""
        if self._closed:
            return
        self._closed = True
        if self.batcher is not None:
            await self.batcher.aclose()
        if self.services.cache is not None:  # a cache passed in stays open, its writes made durable
            await self.services.cache.cache.flush()
        for part in reversed(self._owned):
            closer = getattr(part, "aclose", None)
            if closer is not None:
                await closer()
            elif hasattr(part, "close"):
                part.close()
        if self._log_handler is not None and self.logger is not None:
            self.logger.removeHandler(self._log_handler)

    async def __aenter__(self) -> Pipeline:
        if self.services.guard is not None:  # the guard's one probe of the endpoint, before any request
            await self.services.guard.server()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()


def _guard_token_cost(guard: TokenGuard) -> Callable[[LLMRequest], int]:
    """Tokens a request is charged against a token rate limit: the guard's prompt count plus
    ``max_tokens`` for every answer asked for."""

    def cost(request: LLMRequest) -> int:
        counts = guard.prompt_counts(request)
        max_tokens = request.max_tokens if request.max_tokens is not None else guard.default_max_tokens
        return sum(counts) + max_tokens * len(counts)

    return cost


def _result(ctx: StageContext, error: BaseException | None, total: float) -> PipelineResult:
    response = ctx.response
    timings = list(ctx.recorder.timings)
    llm = next((t.duration_s for t in timings if t.name == "llm_call"), 0.0)
    # a failed call's attempts are not known one by one: its whole llm_call counts as the wire's
    wire = min(llm, response.wire_s) if response is not None else llm
    ok = error is None
    partial = bool(ctx.warnings) or (response is not None and response.partial)
    return PipelineResult(
        request_id=ctx.request.id,
        index=ctx.index,
        ok=ok,
        error=error,
        text=response.text if response is not None else "",
        artifact=ctx.artifact,
        stages=timings,
        cache_tier=ctx.cache_tier,
        cache_key=ctx.cache_key,
        usage=response.usage if response is not None else None,
        ttft_s=response.ttft_s if response is not None else None,
        llm_s=llm,
        wire_s=wire,
        total_s=total,
        overhead_s=max(0.0, total - wire),
        attempts=response.attempts if response is not None and ctx.llm_calls else 0,
        warnings=list(ctx.warnings),
        complete=ok and response is not None and not partial,
        partial=partial,
        coalesced=ctx.coalesced,
        llm_calls=ctx.llm_calls,
        finish_reason=response.finish_reason if response is not None else None,
        run_id=ctx.run_id,
        extra=ctx.extra,
    )

"""Batching in the pipeline: cache misses that arrive together share upstream calls.

With ``config.batch_size > 1`` the :class:`~pytest_iterate.pipeline.runner.Pipeline`
owns a :class:`~pytest_iterate.batch.collector.BatchCollector` between the cache and
the token guard. A miss is still one request with its own stages, cache entry and
result: the ``token_guard`` stage plans it alone (its own truncation and warnings),
then ``llm_call`` hands the planned request to the collector (through the cache's
single flight, so the answer is stored under the request's own key) and waits for
its own answer. Requests that arrive within ``batch_window_s`` (or fill
``batch_size``) go out as one call: a native list prompt where the endpoint takes one,
a packed chat request otherwise; an item whose part fails is sent alone.

The guard sees every request that goes upstream: a batch is checked against the
context window as one request under the ``refuse`` policy (a batch that would not fit
is not cut: its items go one by one), and the learner learns from the batch's own
``usage``. Each item's answer then gets what the guard gives a single answer: the
warnings of its own plan first, and a ``length`` warning when it stopped at
``max_tokens``.

What cannot share a call goes as before: a split plan (several pieces in order), a
streamed request, a request with more than a system and a user message.
"""

from __future__ import annotations

from collections.abc import Callable

from pytest_iterate.batch.call import report_sends
from pytest_iterate.batch.collector import BatchCollector, BatchItem
from pytest_iterate.client.types import Caller, LLMRequest, LLMResponse
from pytest_iterate.tokens.layer import GuardingCaller, GuardPlan

__all__ = ["BatchingCaller", "batch_collector", "batchable_request", "finish_item"]

OnDelta = Callable[[str], None]


def batch_collector(
    call: Caller,
    guard: GuardingCaller | None,
    *,
    batch_size: int,
    window_s: float,
    strategy: str,
    endpoint: str,
) -> BatchCollector:
    """The collector a pipeline uses: batches through the guard under ``refuse``, single
    items through the guard as it is (or straight to ``call`` without a guard); each
    reports the requests it sent, so every item's ``calls`` add up to the client's."""
    single: Caller = _reporting(guard, None) if guard is not None else call
    several: Caller = _reporting(guard, "refuse") if guard is not None else call
    return BatchCollector(
        single,
        batch_caller=several,
        batch_size=batch_size,
        window_s=window_s,
        strategy=strategy,  # type: ignore[arg-type]  # validated by IterateConfig
        endpoint=endpoint,
    )


def _reporting(guard: GuardingCaller, policy: str | None) -> Caller:
    """The guard as a caller that reports its sends (none when it refuses before sending)."""

    async def send(request: LLMRequest, /, *, on_delta: OnDelta | None = None) -> LLMResponse:
        try:
            plan = await guard.plan(request, policy=policy)
        except BaseException:
            report_sends(0)
            raise
        try:
            return await guard.send(plan, on_delta=on_delta)
        finally:
            report_sends(plan.sends)

    return send


def batchable_request(
    collector: BatchCollector | None, request: LLMRequest, plan: GuardPlan | None
) -> LLMRequest | None:
    """The request to hand to ``collector`` (the guard's planned one), or None: send it alone."""
    if collector is None:
        return None
    if plan is not None:
        if len(plan.guarded.requests) != 1:
            return None  # a split: its pieces go in order
        request = plan.guarded.requests[0]
    return request if collector.batchable(request) else None


def finish_item(item: BatchItem, plan: GuardPlan | None, guard: GuardingCaller | None) -> LLMResponse:
    """An item's answer as the guard would hand back a single answer (its plan's warnings
    first, ``length`` flagged); raises the item's own error."""
    response = item.result()
    if plan is not None:
        response.warnings[:0] = plan.warnings
    if guard is not None:
        guard.guard.flag_length(response)
    return response


class BatchingCaller:
    """The batching layer as a :class:`Caller` (``Pipeline.caller`` with ``batch_size > 1``):
    plans the request with the guard, batches it when it can share a call, else sends it
    through the guard alone."""

    def __init__(self, call: Caller, guard: GuardingCaller | None, collector: BatchCollector) -> None:
        self.call = call
        self.guard = guard
        self.collector = collector

    async def __call__(self, request: LLMRequest, /, *, on_delta: OnDelta | None = None) -> LLMResponse:
        guard = self.guard
        plan = await guard.plan(request) if guard is not None else None
        single = None if on_delta is not None else batchable_request(self.collector, request, plan)
        if single is not None:
            return finish_item(await self.collector.submit(single), plan, guard)
        if guard is not None and plan is not None:
            return await guard.send(plan, on_delta=on_delta)
        return await self.call(request, on_delta=on_delta)

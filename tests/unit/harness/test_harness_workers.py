"""Splitting a step across worker processes and merging what they measured (no processes here:
the parts run in this process on a virtual clock; tests/integration/test_harness_run_workers.py
runs real ones)."""

from __future__ import annotations

import asyncio
import dataclasses
import json

import pytest

from pytest_iterate.harness.loads import ClosedLoop, ConstantRate, Poisson, Schedule, bounded_offsets
from pytest_iterate.harness.runner import run_load
from pytest_iterate.harness.samples import RequestSample
from pytest_iterate.harness.stats import summarize
from pytest_iterate.harness.summary import Report, ScenarioSummary, percentile
from pytest_iterate.harness.workers import (
    WorkerPool,
    WorkerResult,
    items_for,
    merge_results,
    per_worker_shape,
    plan_step,
    split_count,
    split_schedule,
    worker_share,
)


class FakeTime:
    """A clock that only moves when someone sleeps."""

    def __init__(self, now: float = 100.0) -> None:
        self.now = now

    def clock(self) -> float:
        return self.now

    async def sleep(self, d: float) -> None:
        await asyncio.sleep(0)
        self.now += max(0.0, d)


@dataclasses.dataclass(frozen=True)
class Item:
    id: str


ITEMS = [Item(c) for c in "abcde"]


async def _instant(item: Item) -> None:
    return None


def test_counts_split_with_the_remainder_on_the_first_workers() -> None:
    assert split_count(10, 4) == [3, 3, 2, 2]
    assert split_count(8, 2) == [4, 4]
    assert split_count(1, 3) == [1, 0, 0]
    with pytest.raises(ValueError, match="workers must be >= 1, got 0"):
        split_count(5, 0)


def test_a_schedule_is_dealt_round_robin_and_nothing_is_lost() -> None:
    offsets = list(bounded_offsets(Poisson(300, seed=3).offsets(), 1001, None))
    shares = split_schedule(offsets, 3)
    assert [len(s) for s in shares] == [334, 334, 333]
    assert shares[1][:2] == (offsets[1], offsets[4])
    assert sorted(o for share in shares for o in share) == offsets


@pytest.mark.parametrize("workers", [1, 2, 3])
@pytest.mark.parametrize(
    ("shape", "requests", "duration_s", "warmup"),
    [
        (Poisson(400, seed=11), None, 1.0, 7),
        (ConstantRate(250), 101, None, 4),
        (Poisson(50, seed=2), 9, 5.0, 0),
    ],
)
async def test_the_parts_of_an_open_loop_send_what_one_process_sends(
    workers: int, shape: Poisson | ConstantRate, requests: int | None, duration_s: float | None, warmup: int
) -> None:
    t = FakeTime()
    one = await run_load(
        _instant,
        ITEMS,
        shape,
        requests=requests,
        duration_s=duration_s,
        warmup=warmup,
        clock=t.clock,
        sleep=t.sleep,
    )
    plan = plan_step(
        shape, workers, requests=requests, duration_s=duration_s, warmup=warmup, items=len(ITEMS)
    )
    assert len(plan.parts) == workers and all(isinstance(p.shape, Schedule) for p in plan.parts)
    results = []
    for part in plan.parts:  # each part as its worker runs it, starting at the shared instant
        t = FakeTime()
        run = await run_load(
            _instant,
            items_for(part, ITEMS),
            part.shape,
            requests=part.requests,
            duration_s=part.duration_s,
            warmup=part.warmup,
            clock=t.clock,
            sleep=t.sleep,
            start_at=100.0,
        )
        shifted = [
            dataclasses.replace(s, scheduled_s=s.scheduled_s - 100, end_s=s.end_s - 100) for s in run.samples
        ]
        results.append(WorkerResult(shifted))
    merged = merge_results(plan, results)
    # the same requests (items), at the same scheduled offsets, measured the same way
    assert [(s.key, round(s.scheduled_s, 9)) for s in merged.samples] == [
        (s.key, round(s.scheduled_s - 100, 9)) for s in one.samples
    ]
    assert merged.wall_s == pytest.approx(one.wall_s)
    assert merged.warmup == one.warmup == warmup and merged.shape == one.shape


def test_a_closed_loop_splits_users_requests_and_warmup() -> None:
    plan = plan_step(ClosedLoop(10), 4, requests=103, duration_s=None, warmup=6, items=5)
    assert [p.shape for p in plan.parts] == [ClosedLoop(3), ClosedLoop(3), ClosedLoop(2), ClosedLoop(2)]
    assert [p.requests for p in plan.parts] == [26, 26, 26, 25]
    assert [p.warmup for p in plan.parts] == [2, 2, 1, 1]
    assert [p.item_start for p in plan.parts] == [0, 1, 2, 3]  # workers start apart in the workload
    timed = plan_step(ClosedLoop(3), 2, requests=None, duration_s=2.5, warmup=0, items=5)
    assert [(p.requests, p.duration_s) for p in timed.parts] == [(None, 2.5), (None, 2.5)]


def test_a_step_no_worker_could_share_is_refused_naming_it() -> None:
    with pytest.raises(ValueError, match=r"--workers 3 is more than the 2 concurrent users of closed:2"):
        plan_step(ClosedLoop(2), 3, requests=10, duration_s=None, warmup=0, items=1)
    with pytest.raises(ValueError, match=r"closed:4: --requests 3 cannot be shared by 4 workers"):
        plan_step(ClosedLoop(4), 4, requests=3, duration_s=None, warmup=0, items=1)
    with pytest.raises(ValueError, match=r"rate:10: its 2 measured requests cannot be shared by 3 workers"):
        plan_step(ConstantRate(10), 3, requests=2, duration_s=None, warmup=5, items=1)


def test_each_worker_is_sized_for_its_share_of_the_load() -> None:
    assert per_worker_shape(ClosedLoop(5), 2) == ClosedLoop(3)
    assert per_worker_shape(ConstantRate(1000), 4) == ConstantRate(250)
    assert per_worker_shape(Poisson(90, seed=4), 3) == Poisson(30, seed=4)


def _sample(t: float, latency: float, *, lag: float = 0.0, ok: bool = True) -> RequestSample:
    return RequestSample(
        scheduled_s=t, start_s=t + lag, end_s=t + latency, ok=ok, error_kind=None if ok else "Busy"
    )


def test_merged_percentiles_are_over_every_sample_not_averaged_per_worker() -> None:
    plan = plan_step(ConstantRate(1000), 2, requests=1000, duration_s=None, warmup=0, items=1)
    # worker 1 sent 900 requests answered in 10 ms, worker 2 sent 100 answered in 1 s (say its
    # connections went to a slow replica): the merged p50 is 10 ms and the p95 1 s; averaging
    # the workers' own percentiles would say about 0.5 s for both
    fast = [_sample(i * 0.001, 0.010 + i * 1e-6, lag=0.0005) for i in range(900)]
    slow = [_sample(0.9 + i * 0.001, 1.0 + i * 1e-4, lag=0.02, ok=i % 10 != 0) for i in range(100)]
    merged = merge_results(plan, [WorkerResult(fast, 12), WorkerResult(slow, 40)]).summary()
    pooled = sorted(s.latency_s for s in fast + slow)
    assert merged.requests == 1000 and merged.errors == 10
    assert merged.latency_s.p50 == pytest.approx(percentile(pooled, 50)) and merged.latency_s.p50 < 0.011
    assert merged.latency_s.p95 == pytest.approx(percentile(pooled, 95)) and merged.latency_s.p95 > 1.0
    averaged = [
        (summarize("1", fast, 1.0).latency_s.stat(q) or 0) / 2
        + (summarize("2", slow, 1.0).latency_s.stat(q) or 0) / 2
        for q in ("p50", "p95")
    ]
    assert all(0.4 < a < 0.6 for a in averaged)  # what averaging would have reported instead
    # the overall lag is over every sample too; each worker's lag is its own
    shares = [worker_share(1, WorkerResult(fast, 12)), worker_share(2, WorkerResult(slow, 40))]
    assert merged.scheduling_lag_s.p99 == pytest.approx(
        0.02
    ) and merged.scheduling_lag_s.p50 == pytest.approx(0.0005)
    assert [(w.requests, w.errors, w.max_inflight) for w in shares] == [(900, 0, 12), (100, 10, 40)]
    assert shares[0].scheduling_lag_s.p99 == pytest.approx(0.0005) and shares[
        1
    ].scheduling_lag_s.p50 == pytest.approx(0.02)


def test_worker_shares_survive_the_json_report() -> None:
    fast = [_sample(i * 0.01, 0.01) for i in range(10)]
    summary = summarize("rate:100", fast, 0.1).replace(workers=(worker_share(1, WorkerResult(fast, 3)),))
    back = Report.from_json(Report.build({"workers": 1}, (), [summary]).to_json()).scenarios[0]
    assert back.workers == summary.workers and back.workers[0].max_inflight == 3
    assert ScenarioSummary.from_json({"name": "old", "requests": 1}).workers == ()  # reports before workers


def test_a_pool_refuses_a_worker_count_that_is_not_a_whole_number_from_one() -> None:
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="workers must be a whole number >= 1"):
            WorkerPool(None, bad)  # type: ignore[arg-type]


def test_a_sample_crosses_between_processes_as_plain_values_and_moves_clocks_whole() -> None:
    sample = RequestSample(
        scheduled_s=10.0,
        start_s=10.001,
        end_s=10.5,
        ok=False,
        first_token_s=10.2,
        error_kind="RateLimited",
        prompt_tokens=12,
        completion_tokens=3,
        cache_tier="disk",
        attempts=2,
        stages={"llm_call": 0.4},
        last_token_s=10.45,
        key="design-7",
    )
    row = sample.to_row()
    assert all(isinstance(v, (int, float, str, bool, dict, type(None))) for v in row)
    assert RequestSample.from_row(json.loads(json.dumps(row))) == sample
    moved = sample.shifted(-10.0)
    assert (moved.scheduled_s, moved.first_token_s, moved.last_token_s) == pytest.approx((0.0, 0.2, 0.45))
    assert (moved.latency_s, moved.ttft_s, moved.lag_s) == pytest.approx(
        (sample.latency_s, sample.ttft_s, sample.lag_s)
    )
    with pytest.raises(ValueError, match="a sample row has 13 values"):
        RequestSample.from_row([1.0, 2.0])

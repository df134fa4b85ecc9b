"""Runner behaviour with fake sends (no timing assertions here: see the integration tests)."""

from __future__ import annotations

import asyncio
import gc
import io

import pytest

from pytest_iterate.harness.loads import ClosedLoop, ConstantRate, Poisson
from pytest_iterate.harness.progress import Progress, ScenarioReporter, progress_enabled, scenario_line
from pytest_iterate.harness.runner import (
    Outcome,
    calibrate_start_rate,
    frozen_heap,
    meets_slo,
    min_step_requests,
    parse_slo,
    run_load,
    saturate,
)
from pytest_iterate.harness.samples import RequestSample
from pytest_iterate.harness.summary import Distribution, ScenarioSummary


class FakeTime:
    """A clock that only moves when someone sleeps."""

    def __init__(self) -> None:
        self.now = 100.0

    def clock(self) -> float:
        return self.now

    async def sleep(self, d: float) -> None:
        await asyncio.sleep(0)  # let tasks due now run first, as a real loop would
        self.now += max(0.0, d)


async def test_open_loop_schedules_at_the_offsets_and_counts_from_them() -> None:
    t = FakeTime()
    sent: list[tuple[str, float]] = []

    async def send(item: str) -> None:
        sent.append((item, t.now))

    result = await run_load(
        send, ["a", "b", "c"], ConstantRate(10), requests=6, clock=t.clock, sleep=t.sleep, spin_s=0
    )
    assert [s.scheduled_s - 100.0 for s in result.samples] == pytest.approx([0, 0.1, 0.2, 0.3, 0.4, 0.5])
    assert [i for i, _ in sent] == ["a", "b", "c", "a", "b", "c"]  # items cycle
    assert all(s.lag_s == pytest.approx(0) for s in result.samples)
    assert result.shape == "rate:10"


async def test_duration_stops_the_schedule() -> None:
    t = FakeTime()

    async def send(item: object) -> None:
        return None

    result = await run_load(
        send, [1], Poisson(100, seed=1), duration_s=2.0, clock=t.clock, sleep=t.sleep, spin_s=0
    )
    assert 150 < len(result.samples) < 250
    assert max(s.scheduled_s for s in result.samples) - 100.0 < 2.0


async def test_warmup_is_sent_but_not_measured() -> None:
    calls = 0

    async def send(item: object) -> None:
        nonlocal calls
        calls += 1

    for shape in (ClosedLoop(2), ConstantRate(1000)):
        calls = 0
        result = await run_load(send, [1], shape, requests=5, warmup=3)
        assert calls == 8 and len(result.samples) == 5 and result.warmup == 3


async def test_failures_become_error_samples_and_outcomes_map() -> None:
    async def send(item: int) -> object:
        await asyncio.sleep(0)
        if item == 0:
            raise TimeoutError("slow")
        if item == 1:
            return Outcome(ok=False, error_kind="RateLimited", attempts=3)
        return Outcome(ttft_s=0.0, completion_tokens=4, cache_tier="memory", stages={"llm_call": 0.001})

    result = await run_load(send, [0, 1, 2], ClosedLoop(3))
    by_kind = sorted((s.ok, s.error_kind) for s in result.samples)
    assert by_kind == [(False, "RateLimited"), (False, "TimeoutError"), (True, None)]
    summary = result.summary()
    assert summary.errors_by_kind == {"TimeoutError": 1, "RateLimited": 1}
    assert summary.retries == 2 and summary.cache.hits == 1 and summary.load == "closed:3"


async def test_closed_loop_never_exceeds_its_concurrency() -> None:
    inflight = peak = 0

    async def send(item: object) -> None:
        nonlocal inflight, peak
        inflight += 1
        peak = max(peak, inflight)
        await asyncio.sleep(0.001)
        inflight -= 1

    result = await run_load(send, [1], ClosedLoop(4), requests=40)
    assert peak == 4 and len(result.samples) == 40
    assert all(s.scheduled_s == s.start_s for s in result.samples)  # closed loop: no schedule to lag


async def test_run_load_validates_arguments() -> None:
    async def send(item: object) -> None:
        return None

    with pytest.raises(ValueError, match="item"):
        await run_load(send, [], ClosedLoop(1))
    with pytest.raises(ValueError, match="-1"):
        await run_load(send, [1], ClosedLoop(1), warmup=-1)
    with pytest.raises(ValueError, match="0"):
        await run_load(send, [1], ClosedLoop(1), requests=0)


def test_slo_parsing_and_check() -> None:
    assert parse_slo("p95=2.0,p99=3") == {"p95": 2.0, "p99": 3.0}
    for bad in ("p97=1", "p95", "p95=x", ""):
        with pytest.raises(ValueError, match="objective"):
            parse_slo(bad)
    summary = ScenarioSummary(name="s", requests=3, latency_s=Distribution.of([1.0, 1.2, 1.5]))
    assert meets_slo(summary, {"p95": 2.0}) and not meets_slo(summary, {"p95": 1.0})
    assert not meets_slo(summary.replace(errors=1), {"p95": 2.0, "error_rate": 0.1})


async def test_saturate_bisects_between_pass_and_fail() -> None:
    t = FakeTime()
    # Latency grows with the offered rate: 1 ms per req/s; objective p95 <= 0.1 s -> knee at 100 req/s.
    current_rate = [0.0]

    def shape_factory(rps: float) -> ConstantRate:
        current_rate[0] = rps
        return ConstantRate(rps)

    async def send(item: object) -> RequestSample:
        now = t.now
        return RequestSample(scheduled_s=now, start_s=now, end_s=now + current_rate[0] / 1000.0)

    sweep = await saturate(
        send,
        [1],
        {"p95": 0.1},
        start_rps=10,
        max_rps=1000,
        refine_steps=4,
        duration_s=1.0,
        shape_factory=shape_factory,
        clock=t.clock,
        sleep=t.sleep,
        spin_s=0,
    )
    assert sweep.best_rps is not None and 80 <= sweep.best_rps <= 100
    assert any(not s.info["meets_slo"] for _, s in sweep.steps)
    rates = [float(s.info["rate_rps"] or 0) for s in sweep.scenarios]
    assert rates == sorted(rates)


def test_min_step_requests_leaves_ten_requests_beyond_the_percentile() -> None:
    assert min_step_requests({"p95": 1.0}) == 200
    assert min_step_requests({"p95": 1.0, "p99": 2.0}) == 1000
    assert min_step_requests({"p50": 1.0}) == 100  # never fewer than 100
    assert min_step_requests({"mean": 1.0, "error_rate": 0.01}) == 100


async def test_saturation_steps_are_long_enough_and_warmed_up() -> None:
    t = FakeTime()
    sent: list[float] = []

    async def send(item: object) -> RequestSample:
        now = t.now
        sent.append(now)
        return RequestSample(scheduled_s=now, start_s=now, end_s=now + 0.01)

    seen: list[ScenarioSummary] = []

    def on_step(summary: ScenarioSummary) -> ScenarioSummary:
        seen.append(summary)
        return summary.with_info(seen=True)

    sweep = await saturate(
        send,
        [1],
        {"p95": 0.5},
        start_rps=10,
        max_rps=40,
        duration_s=1.0,
        warmup=3,
        clock=t.clock,
        sleep=t.sleep,
        spin_s=0,
        on_step=on_step,
    )
    # 10 req/s for 1 s would be 10 requests: the p95 rule asks for 200, so the step runs 20 s
    assert [s.requests for _, s in sweep.steps] == [200, 200, 200]
    assert [s.warmup for _, s in sweep.steps] == [3, 3, 3]
    assert len(sent) == 3 * (200 + 3)
    assert len(seen) == 3 and all(s.info["seen"] for _, s in sweep.steps) and sweep.best_rps == 40


async def test_saturation_steps_down_when_the_first_rate_already_fails() -> None:
    t = FakeTime()
    rate = [0.0]

    def shape_factory(rps: float) -> ConstantRate:
        rate[0] = rps
        return ConstantRate(rps)

    async def send(item: object) -> RequestSample:
        now = t.now
        return RequestSample(scheduled_s=now, start_s=now, end_s=now + rate[0] / 1000.0)

    sweep = await saturate(
        send,
        [1],
        {"p95": 0.1},
        start_rps=400,
        refine_steps=3,
        requests_per_step=200,
        shape_factory=shape_factory,
        clock=t.clock,
        sleep=t.sleep,
        spin_s=0,
    )
    assert [r for r, _ in sweep.steps][:3] == [400, 200, 100]  # down until one passes, then bisect
    assert sweep.best_rps is not None and 100 <= sweep.best_rps <= 150


async def test_calibration_starts_at_one_workers_rate_rounded_down() -> None:
    t = FakeTime()

    async def send(item: object) -> RequestSample:
        now = t.now
        t.now += 0.03  # one worker: 33 req/s
        return RequestSample(scheduled_s=now, start_s=now, end_s=t.now)

    assert await calibrate_start_rate(send, [1], clock=t.clock) == 20.0


async def test_open_loop_keeps_samples_not_tasks_and_freezes_the_heap() -> None:
    t = FakeTime()
    frozen: list[int] = []

    async def send(item: object) -> None:
        frozen.append(gc.get_freeze_count())

    before = gc.get_freeze_count()
    result = await run_load(send, [1], ConstantRate(100), requests=50, clock=t.clock, sleep=t.sleep, spin_s=0)
    assert len(result.samples) == 50 and [s.scheduled_s for s in result.samples] == sorted(
        s.scheduled_s for s in result.samples
    )
    assert min(frozen) > before  # the heap alive before the run was frozen during it
    assert gc.get_freeze_count() == before  # and given back after
    with frozen_heap():
        assert gc.get_freeze_count() >= before


async def test_a_base_exception_in_a_send_is_not_lost() -> None:
    t = FakeTime()

    class Stop(BaseException):
        pass

    async def send(item: object) -> None:
        raise Stop

    with pytest.raises(Stop):
        await run_load(send, [1], ConstantRate(100), requests=3, clock=t.clock, sleep=t.sleep, spin_s=0)


def test_progress_quiet_off_tty_and_in_ci() -> None:
    buf = io.StringIO()
    assert not progress_enabled(buf, {})

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    assert progress_enabled(Tty(), {})
    assert not progress_enabled(Tty(), {"CI": "true"})
    p = Progress("rate:5", 3, stream=buf)
    p.update(RequestSample(scheduled_s=0, start_s=0, end_s=0.1))
    p.close()
    assert buf.getvalue() == ""
    tty = Tty()
    now = [0.0]
    shown = Progress("rate:5", 3, stream=tty, enabled=True, clock=lambda: now[0])
    now[0] = 1.0
    shown.update(RequestSample(scheduled_s=0, start_s=0, end_s=0.1, ok=False))
    now[0] = 2.0
    shown.update(RequestSample(scheduled_s=0, start_s=0, end_s=0.1, cache_tier="memory"))
    out = tty.getvalue()
    assert "\r" in out and "rate:5  1/3" in out and "errors 1" in out and "p50 100.0 ms" in out
    assert "cache 0 %" in out and "rate:5  2/3" in out and "cache 50 %" in out
    shown.close()
    assert tty.getvalue().endswith("\r" + " " * 78 + "\r")  # cleared for the step's summary line


def test_scenario_reporter_live_on_a_terminal_one_line_otherwise() -> None:
    now = [0.0]
    written: list[str] = []
    newlines: list[int] = []
    summary = ScenarioSummary(
        name="standard", requests=2, latency_s=Distribution.of([0.1, 0.2]), max_inflight=2
    )
    quiet = ScenarioReporter(
        written.append, live=False, newline=lambda: newlines.append(1), clock=lambda: now[0]
    )
    assert quiet.start("standard", 2) is None
    now[0] = 3.0
    quiet.finish(summary)
    assert written == [scenario_line(summary) + " [3.0 s]\n"] and newlines == [1]
    assert "standard: 2 requests, 0 errors" in written[0] and "in flight max 2" in written[0]
    written.clear()
    live = ScenarioReporter(written.append, live=True, prefix="iterate: ", clock=lambda: now[0])
    progress = live.start("standard", 2)
    assert progress is not None
    now[0] = 4.0
    progress.update(RequestSample(scheduled_s=0, start_s=0, end_s=0.1))
    progress.close()
    live.finish(summary)
    assert written[0].startswith("\riterate: standard  1/2") and written[1].startswith("\r ")
    assert written[-1].startswith("iterate: standard: 2 requests") and written[-1].endswith("[1.0 s]\n")

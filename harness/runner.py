"""Drive a ``send`` coroutine with a load shape and collect :class:`RequestSample` s.

``send(item)`` is one request; it may return ``None`` (success), an :class:`Outcome`,
or a pipeline result / LLM response (duck-typed: ``ok``, ``error``, ``ttft_s``,
``usage``, ``cache_tier``, ``attempts``, ``stages``). An exception it raises is a
failed request labelled with the exception's class name; the run goes on.

Open-loop shapes (constant rate, poisson) schedule request *i* at ``t0 + offset_i``
regardless of how earlier requests fare, and the sample's latency counts from that
scheduled time, so a stall is charged to every request it delays (no coordinated
omission). How late the harness itself started a request is ``lag_s``.

:func:`saturate` steps the rate up until a latency objective fails, then bisects.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import gc
import itertools
import math
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from pytest_iterate.harness.loads import ClosedLoop, ConstantRate, LoadShape, bounded_offsets
from pytest_iterate.harness.samples import RequestSample, error_kind_of, sample_from_pipeline_result
from pytest_iterate.harness.stats import summarize
from pytest_iterate.harness.summary import ScenarioSummary

__all__ = [
    "Outcome",
    "ProgressSink",
    "RunResult",
    "SweepResult",
    "calibrate_start_rate",
    "frozen_heap",
    "measure",
    "meets_slo",
    "min_step_requests",
    "parse_slo",
    "run_load",
    "saturate",
]

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[Any]]


class ProgressSink(Protocol):
    """What the runner reports progress to (see :class:`pytest_iterate.harness.progress.Progress`)."""

    def update(self, sample: RequestSample) -> None: ...

    def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a ``send`` may return. Times (``ttft_s``, ``last_token_s``) are seconds from
    the actual start of the request."""

    ok: bool = True
    error_kind: str | None = None
    ttft_s: float | None = None
    last_token_s: float | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cache_tier: str | None = None
    attempts: int = 1
    stages: dict[str, float] = field(default_factory=dict)


@dataclass(slots=True)
class RunResult:
    """The measured samples (warm-up excluded) of one run with one shape."""

    shape: str
    samples: list[RequestSample]
    wall_s: float
    warmup: int = 0

    def summary(
        self, name: str | None = None, *, objectives: Mapping[str, float] | None = None
    ) -> ScenarioSummary:
        """The run's statistics, named ``name`` (default: the load shape's label)."""
        return summarize(
            name or self.shape,
            self.samples,
            self.wall_s,
            objectives=objectives,
            load=self.shape,
            warmup=self.warmup,
        )


def _to_sample(result: Any, scheduled: float, start: float, end: float) -> RequestSample:
    if result is None:
        return RequestSample(scheduled_s=scheduled, start_s=start, end_s=end)
    if isinstance(result, Outcome):
        return RequestSample(
            scheduled_s=scheduled,
            start_s=start,
            end_s=end,
            ok=result.ok,
            error_kind=None if result.ok else (result.error_kind or "error"),
            first_token_s=None if result.ttft_s is None else start + result.ttft_s,
            last_token_s=None if result.last_token_s is None else start + result.last_token_s,
            prompt_tokens=result.prompt_tokens,
            completion_tokens=result.completion_tokens,
            cache_tier=result.cache_tier,
            attempts=result.attempts,
            stages=dict(result.stages),
        )
    if isinstance(result, RequestSample):
        return result
    s = sample_from_pipeline_result(result, scheduled, start)
    # The runner's own end time wins over the result's total (it includes the adapter).
    chunk_times = list(getattr(result, "chunk_times_s", None) or [])
    last = start + chunk_times[-1] if chunk_times else None
    completion = s.completion_tokens or len(chunk_times)
    return RequestSample(
        scheduled_s=s.scheduled_s,
        start_s=s.start_s,
        end_s=end,
        ok=s.ok,
        first_token_s=s.first_token_s,
        error_kind=s.error_kind,
        prompt_tokens=s.prompt_tokens,
        completion_tokens=completion,
        cache_tier=s.cache_tier,
        attempts=s.attempts,
        stages=s.stages,
        last_token_s=last,
    )


async def measure(
    send: Callable[[Any], Awaitable[Any]],
    item: Any,
    scheduled: float,
    clock: Clock = time.perf_counter,
    start: float | None = None,
) -> RequestSample:
    """Send ``item`` once and return its sample: ``scheduled`` is when it was due, ``start``
    when it really started (default: now). An exception ``send`` raises is a failed sample
    labelled with the exception's class name (``CancelledError`` goes through)."""
    if start is None:
        start = clock()
    key = getattr(item, "id", None)
    try:
        result = await send(item)
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        end = clock()
        return RequestSample(
            scheduled_s=scheduled,
            start_s=start,
            end_s=end,
            ok=False,
            error_kind=error_kind_of(exc),
            key=key if isinstance(key, str) else None,
        )
    sample = _to_sample(result, scheduled, start, clock())
    if sample.key is None and isinstance(key, str):
        sample = dataclasses.replace(sample, key=key)
    return sample


@contextlib.contextmanager
def frozen_heap() -> Iterator[None]:
    """Keep the objects alive before a run out of the garbage collector's way during it.

    A full collection walks every tracked object; with a loaded pipeline (an encoding, a
    cache, the modules) that took 70-150 ms at 1,000 requests/s here, and every request
    due meanwhile started that late (scheduling lag p99 50-325 ms). ``gc.freeze()`` moves
    the objects alive now to a generation no collection walks (O(1), nothing is copied),
    so collections during the run walk only what the run made; ``gc.unfreeze()`` gives
    them back afterwards. Nothing is collected less: garbage made before the run is
    collected after it.
    """
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


async def run_load(
    send: Callable[[Any], Awaitable[Any]],
    items: Sequence[Any],
    shape: LoadShape,
    *,
    requests: int | None = None,
    duration_s: float | None = None,
    warmup: int = 0,
    clock: Clock = time.perf_counter,
    sleep: Sleep = asyncio.sleep,
    progress: ProgressSink | None = None,
    spin_s: float = 0.0,
    start_at: float | None = None,
) -> RunResult:
    """Send ``items`` (cycled) with ``shape`` and measure.

    Stops after ``requests`` measured requests or when ``duration_s`` seconds of
    schedule have passed (the earlier of both); with neither, sends each item once.
    The first ``warmup`` requests are sent but left out of the samples and wall time.
    Open loops sleep until ``spin_s`` before each send and then yield to the loop
    (``sleep(0)``) until it is due: the OS wakes a sleeping process a millisecond or
    more late, which would otherwise show as scheduling lag. ``spin_s=0`` turns this
    off (needed with a fake clock whose ``sleep(0)`` never advances).
    ``start_at`` (a time on ``clock``) is when the run starts: an open loop's offset 0, a
    closed loop's first sends (default: now). Worker processes started apart use it to
    share one start.
    """
    if not items:
        raise ValueError("run_load needs at least one item to send")
    if requests is not None and requests < 1:
        raise ValueError(f"requests must be >= 1, got {requests!r}")
    if duration_s is not None and not duration_s > 0:
        raise ValueError(f"duration must be > 0 s, got {duration_s!r}")
    if warmup < 0:
        raise ValueError(f"warmup must be >= 0, got {warmup!r}")
    if requests is None and duration_s is None:
        requests = len(items)
    total = None if requests is None else requests + warmup
    source: Iterator[Any] = itertools.cycle(items)

    with frozen_heap():
        if isinstance(shape, ClosedLoop):
            if start_at is not None and start_at > clock():
                await sleep(start_at - clock())
            samples, t_measure = await _closed(
                send, source, shape.concurrency, total, duration_s, warmup, clock, progress
            )
        elif hasattr(shape, "offsets"):
            offsets = bounded_offsets(shape.offsets(), total, duration_s, warmup)
            samples, t_measure = await _open(
                send, source, offsets, warmup, clock, sleep, progress, spin_s, start_at
            )
        else:
            raise TypeError(f"unknown load shape {shape!r}")
    measured = samples[warmup:]
    end = max((s.end_s for s in measured), default=t_measure)
    if progress is not None:
        progress.close()
    wall = max(0.0, end - t_measure)
    if duration_s is not None and shape.kind == "open" and (total is None or len(samples) < total):
        wall = max(wall, duration_s)  # the schedule ran until the duration ended it
    return RunResult(shape=shape.label, samples=measured, wall_s=wall, warmup=warmup)


async def _closed(
    send: Callable[[Any], Awaitable[Any]],
    source: Iterator[Any],
    concurrency: int,
    total: int | None,
    duration_s: float | None,
    warmup: int,
    clock: Clock,
    progress: ProgressSink | None,
) -> tuple[list[RequestSample], float]:
    counter = itertools.count()
    slots: dict[int, RequestSample] = {}
    t0 = clock()
    measure_start: list[float] = []

    async def worker() -> None:
        while True:
            i = next(counter)
            if total is not None and i >= total:
                return
            now = clock()
            if i == warmup and not measure_start:
                measure_start.append(now)
            if duration_s is not None and measure_start and now - measure_start[0] >= duration_s:
                return
            sample = await measure(send, next(source), now, clock, start=now)
            slots[i] = sample
            if progress is not None and i >= warmup:
                progress.update(sample)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    ordered = [slots[i] for i in sorted(slots)]
    measured = [s for i, s in sorted(slots.items()) if i >= warmup]
    start = min((s.scheduled_s for s in measured), default=measure_start[0] if measure_start else t0)
    return ordered, start


async def _open(
    send: Callable[[Any], Awaitable[Any]],
    source: Iterator[Any],
    offsets: Iterator[float],
    warmup: int,
    clock: Clock,
    sleep: Sleep,
    progress: ProgressSink | None,
    spin_s: float,
    start_at: float | None,
) -> tuple[list[RequestSample], float]:
    # finished requests leave only their sample behind: keeping every Task until the end
    # would grow the heap the garbage collector walks with the length of the run
    done: dict[int, RequestSample] = {}
    pending: set[asyncio.Task[RequestSample]] = set()
    t0 = clock() if start_at is None else start_at
    measure_offset = 0.0

    failures: list[BaseException] = []

    def _done(task: asyncio.Task[RequestSample], *, index: int) -> None:
        pending.discard(task)
        if task.cancelled():
            return
        error = task.exception()
        if error is not None:  # measure() turns exceptions into samples: only a BaseException gets here
            failures.append(error)
            return
        sample = task.result()
        done[index] = sample
        if progress is not None and index >= warmup:
            progress.update(sample)

    try:
        for i, offset in enumerate(offsets):
            if i == warmup:
                measure_offset = offset
            due = t0 + offset
            delay = due - clock()
            if delay > spin_s:
                await sleep(delay - spin_s)
            if spin_s > 0:
                while clock() < due:
                    await sleep(0)
            task = asyncio.ensure_future(measure(send, next(source), due, clock))
            task.add_done_callback(functools.partial(_done, index=i))
            pending.add(task)
        while pending:
            await asyncio.wait(set(pending))
    except BaseException:
        for task in pending:
            task.cancel()
        raise
    if failures:
        raise failures[0]
    return [done[i] for i in sorted(done)], t0 + measure_offset


# --- saturation sweep -------------------------------------------------------------------------

_SLO_STATS = ("mean", "p50", "p90", "p95", "p99", "p99_9", "max")


def parse_slo(text: str) -> dict[str, float]:
    """``"p95=2.0"`` or ``"p95=2.0,p99=3"`` -> ``{"p95": 2.0, "p99": 3.0}`` (latency seconds);
    ``error_rate=0.01`` bounds the error fraction."""
    out: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = part.partition("=")
        key = key.strip().replace(".", "_")
        if not sep or key not in (*_SLO_STATS, "error_rate"):
            raise ValueError(
                f"bad objective {part!r}; expected STAT=SECONDS with STAT one of "
                f"{', '.join(_SLO_STATS)} (or error_rate=FRACTION)"
            )
        try:
            out[key] = float(value)
        except ValueError:
            raise ValueError(f"bad objective {part!r}: {value!r} is not a number") from None
    if not out:
        raise ValueError(f"bad objective {text!r}: empty")
    return out


def meets_slo(summary: ScenarioSummary, slo: Mapping[str, float]) -> bool:
    """True when every bound of ``slo`` holds for the scenario ``summary``."""
    for key, bound in slo.items():
        value = summary.error_rate if key == "error_rate" else summary.latency_s.stat(key)
        if value is None or value > bound:
            return False
    return True


def min_step_requests(slo: Mapping[str, float], tail: int = 10) -> int:
    """Requests a saturation step needs before its objective means anything: ``tail``
    requests beyond the strictest percentile bound (p95: 200, p99: 1,000, p99.9: 10,000);
    100 for a mean, a max or an error rate."""
    fractions = {"p50": 0.5, "p90": 0.9, "p95": 0.95, "p99": 0.99, "p99_9": 0.999}
    need = 100
    for key in slo:
        if key in fractions:
            need = max(need, math.ceil(tail / (1.0 - fractions[key])))
    return need


@dataclass(slots=True)
class SweepResult:
    """Every rate tried (in order) with its summary, and the best rate that met the objective;
    ``start_rps`` is where the doubling began (measured, unless given)."""

    steps: list[tuple[float, ScenarioSummary]]
    best_rps: float | None
    start_rps: float = 1.0

    @property
    def scenarios(self) -> list[ScenarioSummary]:
        return [s for _, s in sorted(self.steps, key=lambda p: p[0])]


def _round_down(rate: float) -> float:
    """The largest 1-2-5 value (..., 0.5, 1, 2, 5, 10, 20, ...) not above ``rate``."""
    exp = math.floor(math.log10(rate))
    for mantissa in (5.0, 2.0, 1.0):
        value = mantissa * 10.0**exp
        if value <= rate * (1 + 1e-9):
            return value
    return 10.0 ** (exp - 1) * 5.0  # pragma: no cover - rate < 1 x 10^exp cannot happen


async def calibrate_start_rate(
    send: Callable[[Any], Awaitable[Any]],
    items: Sequence[Any],
    *,
    requests: int = 5,
    warmup: int = 1,
    clock: Clock = time.perf_counter,
) -> float:
    """Where a saturation search starts: one request at a time (``requests`` of them, after
    ``warmup``), the rate one worker manages (1 / mean latency) rounded down to 1-2-5,
    at least 0.1 requests/s. An endpoint serving several at once meets the objective there."""
    result = await run_load(send, items, ClosedLoop(1), requests=requests, warmup=warmup, clock=clock)
    mean = result.summary().latency_s.mean
    if not mean or mean <= 0:
        return 1.0
    return max(0.1, _round_down(1.0 / mean))


async def saturate(
    send: Callable[[Any], Awaitable[Any]],
    items: Sequence[Any],
    slo: Mapping[str, float],
    *,
    start_rps: float | None = 1.0,
    max_rps: float = 10_000.0,
    factor: float = 2.0,
    refine_steps: int = 3,
    requests_per_step: int | None = None,
    duration_s: float | None = 5.0,
    min_requests: int | None = None,
    warmup: int = 0,
    shape_factory: Callable[[float], LoadShape] = ConstantRate,
    clock: Clock = time.perf_counter,
    sleep: Sleep = asyncio.sleep,
    spin_s: float = 0.0,
    on_step: Callable[[ScenarioSummary], ScenarioSummary] | None = None,
) -> SweepResult:
    """The highest open-loop rate whose run meets ``slo`` (e.g. ``{"p95": 2.0}``).

    Multiplies the rate by ``factor`` from ``start_rps`` (None: measured with
    :func:`calibrate_start_rate`) until a step fails or ``max_rps`` is passed, then
    bisects ``refine_steps`` times between the last passing and the first failing rate.
    A step also fails when the achieved throughput is under 90 % of the offered rate
    (the target could not keep up). Each step sends ``warmup`` requests first, then runs
    ``requests_per_step`` requests when given, else at least ``duration_s`` seconds and
    at least ``min_requests`` requests (default :func:`min_step_requests` of ``slo``), so
    a percentile bound is judged on enough samples. ``on_step`` sees each step's summary
    as it ends and returns it, amended or not (the sweep keeps what it returns).
    """
    if factor <= 1:
        raise ValueError(f"factor must be > 1, got {factor!r}")
    steps: list[tuple[float, ScenarioSummary]] = []
    if start_rps is None:
        start_rps = min(max_rps, await calibrate_start_rate(send, items, clock=clock))
    floor = min_step_requests(slo) if min_requests is None else min_requests

    async def trial(rps: float) -> bool:
        if requests_per_step is not None:
            requests, seconds = requests_per_step, duration_s
        else:
            requests, seconds = None, max(duration_s or 0.0, floor / rps)
        result = await run_load(
            send,
            items,
            shape_factory(rps),
            requests=requests,
            duration_s=seconds,
            warmup=warmup,
            clock=clock,
            sleep=sleep,
            spin_s=spin_s,
        )
        summary = result.summary(f"rate:{rps:g}")
        achieved = summary.throughput_rps or 0.0
        ok = meets_slo(summary, slo) and achieved >= 0.9 * rps * (1 - summary.error_rate)
        summary = summary.with_info(rate_rps=rps, meets_slo=ok)
        if on_step is not None:
            summary = on_step(summary)
        steps.append((rps, summary))
        return ok

    good: float | None = None
    bad: float | None = None
    rps = start_rps
    while rps <= max_rps:
        if await trial(rps):
            good = rps
            rps *= factor
        else:
            bad = rps
            break
    if good is None and bad is not None:  # the start already failed: step down before bisecting
        rps = bad / factor
        for _ in range(refine_steps):
            if await trial(rps):
                good = rps
                break
            bad, rps = rps, rps / factor
    if good is not None and bad is not None:
        for _ in range(refine_steps):
            mid = (good + bad) / 2
            if await trial(mid):
                good = mid
            else:
                bad = mid
    return SweepResult(steps=steps, best_rps=good, start_rps=start_rps)

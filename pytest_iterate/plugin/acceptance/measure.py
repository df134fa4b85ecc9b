"""What the acceptance suite measures around a run, beyond the per-request samples.

* :class:`LoopWatch` — the event loop's own health while a scenario runs (the seed's concern
  is CPU spikes starving the loop into timeouts): its utilization (the share of wall time
  the loop was not waiting for I/O, Node.js's "event loop utilization"), the CPU share of
  its thread, its lag (how late a 10 ms timer fires), and the process CPU per core, the
  simulated endpoint's own thread left out.
* :func:`captured_stage_logs`, :func:`stage_log_counts` — the pipeline's JSON stage logs,
  kept in memory and counted per stage.
* :func:`metrics_mismatches` — ``/metrics`` read back and held against what the run did.
* :func:`wrong_answers` — cache hits whose answer names another request (the mock tags
  every answer with the digest of the request it answers).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import math
import os
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from pytest_iterate.batch.call import native_request
from pytest_iterate.client.telemetry import JsonFormatter
from pytest_iterate.doubles.mock.digest import answer_digest, request_digest
from pytest_iterate.harness.summary import percentile
from pytest_iterate.pipeline.design import DesignRequest
from pytest_iterate.pipeline.prompts import PromptBuilder
from pytest_iterate.pipeline.runner import PipelineResult

__all__ = [
    "LoopWatch",
    "available_cores",
    "captured_stage_logs",
    "metrics_mismatches",
    "stage_log_counts",
    "wrong_answers",
]


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


@dataclass(slots=True)
class LoopWatch:
    """``async with LoopWatch(other_cpu) as watch: ...`` around a run in the running loop.

    ``other_cpu`` returns CPU seconds of work that shares the process but is not the
    pipeline's (the mock server's thread), so the process figure can leave it out.
    """

    other_cpu: Callable[[], float | None] = lambda: None
    interval_s: float = 0.01
    wall_s: float = 0.0
    loop_cpu_s: float = 0.0
    process_cpu_s: float = 0.0
    idle_s: float | None = None  # time blocked waiting for I/O (None: the loop has no selector to time)
    lags_s: list[float] = field(default_factory=list)

    @contextlib.asynccontextmanager
    async def watching(self) -> AsyncIterator[LoopWatch]:
        restore = self._time_the_selector(asyncio.get_running_loop())
        monitor = asyncio.ensure_future(self._monitor())
        wall0, thread0, proc0, other0 = (
            time.perf_counter(),
            time.thread_time(),
            time.process_time(),
            self.other_cpu(),
        )
        try:
            yield self
        finally:
            other1 = self.other_cpu()
            self.wall_s = time.perf_counter() - wall0
            self.loop_cpu_s = time.thread_time() - thread0
            other = (other1 - other0) if other0 is not None and other1 is not None else 0.0
            self.process_cpu_s = time.process_time() - proc0 - other
            monitor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await monitor
            restore()

    def _time_the_selector(self, loop: asyncio.AbstractEventLoop) -> Callable[[], None]:
        """Time every wait of the loop's selector (asyncio's selector loops have one); returns
        the undo. Idle is the time spent there; everything else the loop was busy."""
        selector = getattr(loop, "_selector", None)
        select = getattr(selector, "select", None)
        if select is None:
            return lambda: None
        self.idle_s = 0.0

        def timed(timeout: float | None = None) -> Any:
            t0 = time.perf_counter()
            try:
                return select(timeout)
            finally:
                self.idle_s = (self.idle_s or 0.0) + time.perf_counter() - t0

        selector.select = timed  # type: ignore[union-attr]

        def restore() -> None:
            del selector.select  # type: ignore[union-attr]

        return restore

    async def _monitor(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            due = loop.time() + self.interval_s
            await asyncio.sleep(self.interval_s)
            self.lags_s.append(max(0.0, loop.time() - due))

    @property
    def utilization_percent(self) -> float:
        """The share of wall time the loop was busy (running callbacks, or ready and waiting for
        a core), not blocked waiting for I/O; the thread's CPU share where it cannot be timed."""
        if self.idle_s is None or self.wall_s <= 0:
            return self.loop_cpu_percent
        return 100.0 * max(0.0, self.wall_s - self.idle_s) / self.wall_s

    @property
    def loop_cpu_percent(self) -> float:
        """CPU time of the event loop's thread / wall time, in % of one core."""
        return 100.0 * self.loop_cpu_s / self.wall_s if self.wall_s > 0 else math.nan

    @property
    def process_cpu_percent(self) -> float:
        """CPU time of the process (the mock's thread excluded) / wall time / available cores, in %."""
        return 100.0 * self.process_cpu_s / self.wall_s / available_cores() if self.wall_s > 0 else math.nan

    def lag_ms(self, q: float) -> float:
        return 1000.0 * percentile(self.lags_s, q) if self.lags_s else math.nan


@contextlib.contextmanager
def captured_stage_logs() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    """A private logger writing the pipeline's JSON stage logs into memory."""
    stream = io.StringIO()
    logger = logging.getLogger("pytest_iterate.plugin.acceptance.stage_logs")
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        yield logger, stream
    finally:
        logger.removeHandler(handler)


def stage_log_counts(text: str) -> dict[str, int]:
    """Per stage, the JSON log lines carrying a request id, a start timestamp and a duration."""
    counts: dict[str, int] = {}
    for line in text.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if (
            entry.get("event") == "stage"
            and entry.get("request_id")
            and isinstance(entry.get("start_s"), (int, float))
            and entry["start_s"] > 0
            and isinstance(entry.get("duration_s"), (int, float))
            and entry["duration_s"] >= 0
        ):
            counts[entry["stage"]] = counts.get(entry["stage"], 0) + 1
    return counts


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = float(sample.value)
    return out


def _total(
    samples: Mapping[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str
) -> float:
    return sum(
        value
        for (n, lbls), value in samples.items()
        if n == name and all(dict(lbls).get(k) == v for k, v in labels.items())
    )


def metrics_mismatches(
    exposition: str,
    names: Sequence[str],
    results: Sequence[PipelineResult],
    stages: Sequence[str],
) -> list[str]:
    """What ``/metrics`` gets wrong about the run: a missing metric name, a request counter
    that is not the number of LLM calls made, a stage histogram whose count is not the
    number of requests (every request runs every stage), a cache-hit counter that is not
    the number of hits."""
    problems = [f"{name} missing" for name in names if name not in exposition]
    samples = _samples(exposition)
    calls = sum(r.llm_calls for r in results)
    counted = _total(samples, "iterate_requests_total")
    if counted != calls:
        problems.append(f"iterate_requests_total is {counted:g}, the run made {calls} calls")
    for stage in stages:
        count = _total(samples, "iterate_stage_duration_seconds_count", stage=stage)
        if count != len(results):
            problems.append(
                f"iterate_stage_duration_seconds_count{{stage={stage!r}}} is {count:g}, "
                f"the run had {len(results)} requests"
            )
    hits = sum(1 for r in results if r.cache_tier is not None)
    counted_hits = _total(samples, "iterate_cache_requests_total", result="hit")
    if counted_hits != hits:
        problems.append(
            f"iterate_cache_requests_total{{result='hit'}} is {counted_hits:g}, the run had {hits} hits"
        )
    return problems


def wrong_answers(
    results: Sequence[PipelineResult],
    designs: Mapping[str, DesignRequest],
    builder: PromptBuilder,
    model: str,
) -> tuple[int, int]:
    """(hits answering another request, hits that could be checked). A hit is checked when
    its answer carries the mock's ``# answers <digest>`` tag; the digest must be that of the
    request its own design builds, as sent alone or as one prompt of a native batch (a
    packed item is tagged with the request itself: see the mock's ``item_digest``)."""
    wrong = checked = 0
    for result in results:
        if result.cache_tier is None or not result.ok:
            continue
        tag = answer_digest(result.text)
        design = designs.get(result.request_id)
        if tag is None or design is None:
            continue
        checked += 1
        request = builder.build(design)
        alone, in_batch = request.body(model), native_request(request).body(model)
        if tag not in (request_digest(alone), request_digest(in_batch)):
            wrong += 1
    return wrong, checked

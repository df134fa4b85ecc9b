"""The acceptance scenarios: each runs ONCE per session and is shared by its criteria.

:class:`ScenarioRunner` ``.get(name)`` runs a scenario on first use (in its own event
loop, its own endpoint and pipeline, a fresh cache folder) and keeps the
:class:`ScenarioResult`; ``.observe(criterion_id)`` returns the observed value of a
criterion from the scenario it reads. A ``progress`` reporter shows each load run
while it runs (a live line on a terminal) and its summary line when it ends. What is
measured is the design-iteration :class:`~pytest_iterate.pipeline.runner.Pipeline`,
stage by stage, driven by the harness's closed-loop runner. The endpoint is the
embedded mock, served from a thread of
its own so its work is not counted as the pipeline's, or a real URL.

Every measurement can fail: latency counts successful requests only (and says how many
failed), attempts are counted by the endpoint, refusals for length before any repair,
cache hits are checked against the request they answer, ``/metrics`` values against the
run. ``tests/validity/`` breaks each thing a criterion guards and watches it fail.

Scenarios:

``standard``      the workload (100 designs, duplicates) at the top concurrency level;
                  e2e/overhead latency, throughput, 100-designs time, loop CPU, stage logs
``repeat``        the same workload again through a NEW pipeline on the standard run's
                  cache folder (as the next CI run would): its hit rate, each hit checked
``concurrency_N`` 2N unique designs at concurrency N, fresh cache (the sweep)
``queue_10``      20 unique designs at 10 against an endpoint serving 5 at a time (the
                  mock's capacity halved): no timeouts, no failures while it queues
``faults``        1,000 requests on the mock's fast profile with 1 % 429 + 1 % 503 per
                  attempt (about 20 faults): the error rate after retries. Against a real
                  endpoint: the standard run's own failures
``retry_bound``   40 requests on the fast profile, a quarter failing their first
                  max_attempts attempts, a quarter one fewer: attempts counted by the mock
``long_context``  the long-context workload against a 2,048-token window: refusals for
                  length, answers neither complete nor flagged
``saturation``    the pipeline served over HTTP (``serve-pipeline``'s service) with 2 slots
                  and a queue of 2: 4 requests fill it (on the mock, calls of 10 s), then 8
                  at once: how fast their 503 busy answers come back over HTTP,
                  ``Retry-After`` and ``retry-after-ms`` included
``rate_limit``    90 requests at 8 concurrent against the mock's fast profile with request
                  and token limits of 15 requests a second (the token limit sized to the
                  workload), 2 s of each left at the start (a key another job uses): 429
                  answers and failures, and the share of the allowed rate achieved
``metrics``       ``/metrics`` of the standard run scraped over HTTP and held against the run
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import math
import os
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from pytest_iterate.client.config import IterateConfig, read_pyproject_table
from pytest_iterate.client.errors import HTTPStatusError, IterateError, RequestTimeout
from pytest_iterate.client.metrics import METRIC_NAMES, IterateMetrics
from pytest_iterate.client.metrics_server import MetricsServer
from pytest_iterate.doubles.mock.profiles import Distribution, load_profile
from pytest_iterate.doubles.mock.ratelimit import RateLimiter
from pytest_iterate.endpoint import Endpoint, EndpointSpec, open_endpoint, probe_endpoint
from pytest_iterate.harness.loads import ClosedLoop
from pytest_iterate.harness.progress import ScenarioReporter
from pytest_iterate.harness.runner import RunResult, run_load
from pytest_iterate.harness.samples import RequestSample
from pytest_iterate.harness.stats import summarize
from pytest_iterate.harness.summary import ScenarioSummary
from pytest_iterate.pipeline.design import DesignRequest
from pytest_iterate.pipeline.prompts import PromptBuilder
from pytest_iterate.pipeline.runner import Pipeline, PipelineResult
from pytest_iterate.pipeline.stages import STAGE_NAMES
from pytest_iterate.pipeline.workload import load_workload, long_context_workload_path, standard_workload_path
from pytest_iterate.plugin.acceptance.criteria import CRITERIA_BY_ID
from pytest_iterate.plugin.acceptance.measure import (
    LoopWatch,
    available_cores,
    captured_stage_logs,
    metrics_mismatches,
    stage_log_counts,
    wrong_answers,
)
from pytest_iterate.plugin.options import IterateOptions
from pytest_iterate.service.app import PipelineService
from pytest_iterate.tokens.counter import TokenCounter
from pytest_iterate.tokens.layer import is_context_error

__all__ = ["NeedsMock", "NoMeasurement", "ScenarioResult", "ScenarioRunner", "available_cores"]

FAULT_RATES = {"429": 0.01, "503": 0.01}  # per attempt: the seed's "2 % transient 429/503"
FAULT_REQUESTS = 1000  # enough attempts for about 20 injected faults
LONG_CONTEXT_WINDOW = 2048  # the mock's window for the long-context workload (the real server's n_ctx)
RETRY_BOUND_REQUESTS = 40
QUEUE_LEVEL = 10
RATE_LIMIT_RPS = 15.0  # requests a second the mock allows (and tokens for as many average requests)
RATE_LIMIT_HEADROOM_S = 2.0  # seconds of each budget left when the run starts
RATE_LIMIT_REQUESTS = 90
RATE_LIMIT_CONCURRENCY = 8
SATURATION_REQUESTS = 12


class NeedsMock(Exception):
    """A scenario needs the embedded mock (fault injection, attempts counted by the endpoint)."""


class NoMeasurement(Exception):
    """A scenario measured nothing: the endpoint is unreachable, or every request failed.

    Its criteria fail with this message instead of passing on the latency of errors.
    """


@dataclass(slots=True)
class ScenarioResult:
    name: str
    summary: ScenarioSummary | None
    results: list[PipelineResult] = field(default_factory=list)
    observed: dict[str, float] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)
    metrics: IterateMetrics | None = None  # the run's metrics registry
    stage_lines: dict[str, int] = field(default_factory=dict)  # JSON stage log lines per stage


@dataclass(slots=True)
class _Run:
    """One closed-loop run of a scenario: its summary, results in send order, and the loop's health."""

    summary: ScenarioSummary
    results: list[PipelineResult]
    run: RunResult
    watch: LoopWatch

    @property
    def ok(self) -> list[PipelineResult]:
        return [r for r in self.results if r.ok]

    @property
    def ok_latencies(self) -> list[float]:
        return [s.latency_s for s in self.run.samples if s.ok]

    def failed_note(self) -> str:
        """``"; 3 of 100 requests failed (RequestTimeout 3)"`` or ``""``."""
        s = self.summary
        return f"; {s.errors} of {s.requests} requests failed ({s.error_kinds_text()})" if s.errors else ""


def _unique(items: Sequence[DesignRequest]) -> list[DesignRequest]:
    seen: set[str] = set()
    out = []
    for item in items:
        if item.id not in seen:
            seen.add(item.id)
            out.append(item)
    return out


def _mean(values: Sequence[float]) -> float:
    return math.fsum(values) / len(values) if values else math.nan


class ScenarioRunner:
    """Runs scenarios lazily, once each; results kept in :attr:`results` (insertion order)."""

    def __init__(
        self,
        options: IterateOptions,
        *,
        pyproject: Path | None = None,
        workdir: Path | None = None,
        progress: ScenarioReporter | None = None,
    ) -> None:
        self.options = options
        self.progress = progress
        self.pyproject = pyproject
        self._own_workdir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="iterate-"))
        self.results: dict[str, ScenarioResult] = {}
        self._failed: dict[str, BaseException] = {}
        self._unreachable: str | None = None
        self._probed = False
        self._scenarios: dict[str, Callable[[], Any]] = {
            "standard": self._standard,
            "queue_10": self._queue,
            "faults": self._faults,
            "retry_bound": self._retry_bound,
            "long_context": self._long_context,
            "saturation": self._saturation,
            "rate_limit": self._rate_limit,
            "metrics": self._metrics,
        }

    # -- public -----------------------------------------------------------------------
    def get(self, name: str) -> ScenarioResult:
        """The result of scenario ``name``, running it on first use (a failure is re-raised each time)."""
        if name in self.results:
            return self.results[name]
        if name in self._failed:
            raise self._failed[name]
        try:
            if name == "repeat":
                self.get("standard")  # the standard run also makes the repeat run
                return self.results["repeat"]
            if name == "metrics" or (name == "faults" and not self.options.is_mock):
                self.get("standard")  # both read the standard run
            if name == "faults" and not self.options.is_mock:
                result = self._faults_from_standard()
            elif name.startswith("concurrency_"):
                result = asyncio.run(self._sweep(int(name.removeprefix("concurrency_"))))
            elif name in self._scenarios:
                result = asyncio.run(self._scenarios[name]())
            else:
                raise KeyError(f"unknown scenario {name!r}")
        except BaseException as exc:
            self._failed[name] = exc
            raise
        self.results[name] = result
        return result

    def observe(self, criterion_id: str) -> tuple[float, ScenarioResult]:
        scenario = self.get(CRITERIA_BY_ID[criterion_id].scenario)
        return scenario.observed.get(criterion_id, math.nan), scenario

    def summaries(self) -> list[ScenarioSummary]:
        return [r.summary for r in self.results.values() if r.summary is not None]

    def close(self) -> None:
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    # -- parts ------------------------------------------------------------------------
    @property
    def _top(self) -> int:
        return max(self.options.concurrency)

    def _workload(self, long: bool = False) -> list[DesignRequest]:
        if long:
            return load_workload(long_context_workload_path())
        return load_workload(self.options.workload or standard_workload_path())

    def _cache_dir(self, name: str) -> str:
        path = self.workdir / f"cache-{name}"
        path.mkdir(parents=True, exist_ok=True)
        return str(path)

    def _explicit(self, name: str) -> bool:
        """Whether the user set config field ``name`` (in ``[tool.iterate]`` or ``ITERATE_*``)."""
        if f"ITERATE_{name.upper()}" in os.environ:
            return True
        return self.pyproject is not None and name in read_pyproject_table(self.pyproject)

    @contextlib.asynccontextmanager
    async def _pipeline(
        self, endpoint: Endpoint, *, concurrency: int, logger: Any = None, **overrides: Any
    ) -> AsyncIterator[Pipeline]:
        """A pipeline for ``endpoint`` built from the options and ``[tool.iterate]``.

        Its concurrency limit follows the scenario's ``concurrency`` (a pipeline capped below
        what the scenario drives would measure its own queue) unless the user set
        ``max_concurrent_requests``: then that limit stays, and the queue it makes is the
        pipeline's own cost, counted in ``latency.overhead_mean``.
        """
        opts = self.options
        if "max_concurrent_requests" not in overrides and not self._explicit("max_concurrent_requests"):
            overrides["max_concurrent_requests"] = max(concurrency, 1)
        values = endpoint.config_values(
            model=opts.model, api_key_env=opts.api_key_env, store_path=":memory:", **overrides
        )
        config = IterateConfig.load(values, pyproject=self.pyproject)
        parts: dict[str, Any] = {} if logger is None else {"logger": logger}
        async with endpoint.pipeline(config, **parts) as pipeline:
            yield pipeline

    @contextlib.asynccontextmanager
    async def _endpoint(self, spec: EndpointSpec | None = None) -> AsyncIterator[Endpoint]:
        """The session's endpoint (``spec`` adjusts the mock), its mock on a thread of its own."""
        opts = self.options
        base = EndpointSpec(
            opts.endpoint,
            profile=opts.profile,
            cassette=opts.cassette,
            record_mode=opts.record_mode,
            replay_timing=opts.replay_timing,
        )
        spec = spec or base
        if spec.external and spec.needs_server:
            await self._check_reachable()
        async with open_endpoint(spec, threaded=spec.target == "mock") as ep:
            yield ep

    def _mock_spec(self, **changes: Any) -> EndpointSpec:
        """The session's endpoint as the mock with ``changes`` (faults, profile...); NeedsMock
        against a real endpoint."""
        opts = self.options
        if not opts.is_mock:
            raise NeedsMock(
                f"needs the embedded mock (fault injection, attempts counted by the endpoint): "
                f"skipped against {opts.endpoint_shown}"
            )
        return EndpointSpec("mock", profile=opts.profile).replace(**changes)

    async def _check_reachable(self) -> None:
        """Probe a real endpoint once per session, so a wrong URL fails every criterion in
        seconds, with the reason, instead of after a workload of retries."""
        if not self._probed:
            self._unreachable = await probe_endpoint(self.options.endpoint)
            self._probed = True
        if self._unreachable is not None:
            raise NoMeasurement(
                f"endpoint {self.options.endpoint_shown} is unreachable ({self._unreachable}); "
                "start the server or fix --iterate-endpoint"
            )

    async def _drive(
        self,
        name: str,
        endpoint: Endpoint,
        pipeline: Pipeline,
        items: Sequence[DesignRequest],
        concurrency: int,
        *,
        requests: int | None = None,
        sweep: bool = False,
        require_answers: bool = True,
    ) -> _Run:
        """Closed-loop run of ``items`` through ``pipeline``, the event loop watched."""
        results: list[PipelineResult] = []

        async def send(item: DesignRequest) -> PipelineResult:
            result = await pipeline.run(item)
            results.append(result)
            return result

        total = requests or len(items)
        live = self.progress.start(name, total) if self.progress is not None else None
        watch = LoopWatch(other_cpu=endpoint.server_cpu_seconds)
        async with watch.watching():
            run = await run_load(send, list(items), ClosedLoop(concurrency), requests=total, progress=live)
        summary = run.summary(name).replace(
            concurrency=concurrency, cpu_percent=watch.loop_cpu_percent, endpoint=endpoint.label, sweep=sweep
        )
        if self.progress is not None:
            self.progress.finish(summary)
        if require_answers and summary.all_failed(ignore=("ContextOverflow",)):
            first = next((r.error for r in results if r.error is not None), None)
            raise NoMeasurement(
                f"scenario {name!r}: all {summary.requests} requests failed against {endpoint.label}; "
                f"first error: {type(first).__name__}: {first}"
            )
        return _Run(summary, results, run, watch)

    # -- scenarios --------------------------------------------------------------------
    async def _standard(self) -> ScenarioResult:
        """The standard run, then (same endpoint, new pipeline, same cache folder) the repeat run."""
        items = self._workload()
        level = self._top
        cache_dir = self._cache_dir("standard")
        with captured_stage_logs() as (logger, stream):
            async with self._endpoint() as ep:
                async with self._pipeline(
                    ep, concurrency=level, cache_dir=cache_dir, logger=logger
                ) as pipeline:
                    run = await self._drive("standard", ep, pipeline, items, level, sweep=True)
                    metrics = pipeline.metrics
                async with self._pipeline(ep, concurrency=level, cache_dir=cache_dir) as again:
                    repeat = await self._drive("repeat", ep, again, items, level)
                    checked = wrong_answers(
                        repeat.results, {d.id: d for d in items}, again.services.builder, again.services.model
                    )
            logged = stage_log_counts(stream.getvalue())
        self.results["repeat"] = self._repeat_result(run, repeat, checked)
        return self._standard_result(run, logged, metrics, len(items))

    def _standard_result(
        self, run: _Run, logged: Mapping[str, int], metrics: IterateMetrics, designs: int
    ) -> ScenarioResult:
        ok, results, summary, watch = run.ok, run.results, run.summary, run.watch
        wall, failed = summary.wall_s, run.failed_note()
        stage_ok = sum(min(logged.get(s, 0), len(results)) for s in STAGE_NAMES)
        expected = len(results) * len(STAGE_NAMES)
        waiting = _mean([max(0.0, r.llm_s - r.wire_s) for r in ok])
        around = _mean([max(0.0, r.total_s - r.llm_s) for r in ok])
        within = sum(1 for r in results if r.cache_tier is not None)
        observed = {
            "latency.e2e_mean": _mean(run.ok_latencies),
            "latency.overhead_mean": _mean([r.overhead_s for r in ok]),
            "throughput.requests_per_min": 60.0 * len(ok) / wall if wall > 0 else math.nan,
            "throughput.designs_100": wall * 100.0 / len(ok) if ok else math.nan,
            "cpu.utilization": watch.utilization_percent,
            "observability.stage_logs": 100.0 * stage_ok / expected if expected else math.nan,
        }
        notes = {
            "latency.e2e_mean": f"mean over {len(ok)} successful requests{failed}",
            "latency.overhead_mean": f"mean over {len(ok)} successful requests: stages around the call "
            f"{1000 * around:.1f} ms, waiting inside the call (queue, backoff) {1000 * waiting:.1f} ms"
            f"{failed}",
            "throughput.requests_per_min": f"{len(ok)} answered in {wall:.2f} s{failed}",
            "throughput.designs_100": f"{designs} designs in {wall:.2f} s at concurrency "
            f"{summary.concurrency}{failed}",
            "cpu.utilization": f"event loop busy {watch.utilization_percent:.1f} % of the run, its thread on "
            f"the CPU {watch.loop_cpu_percent:.1f} % of one core; loop lag p99 "
            f"{watch.lag_ms(99):.1f} ms, max {watch.lag_ms(100):.1f} ms; process "
            f"{watch.process_cpu_percent:.1f} % of {available_cores()} cores (the mock's thread excluded); "
            f"{within} of {len(results)} answered from the cache within the run",
            "observability.stage_logs": f"{stage_ok} JSON stage log lines with start_s and duration_s "
            f"of {expected} expected",
        }
        health = {
            "loop_cpu_percent": watch.loop_cpu_percent,
            "process_cpu_percent": watch.process_cpu_percent,
            "loop_lag_p99_ms": watch.lag_ms(99),  # NaN when the run ended before the first lag sample
        }
        summary = summary.with_info(**{k: round(v, 3) for k, v in health.items() if math.isfinite(v)})
        return ScenarioResult("standard", summary, results, observed, notes, metrics, dict(logged))

    @staticmethod
    def _repeat_result(run: _Run, repeat: _Run, checked: tuple[int, int]) -> ScenarioResult:
        wrong, verified = checked
        results = repeat.results
        hits = sum(1 for r in results if r.cache_tier is not None)
        within = sum(1 for r in run.results if r.cache_tier is not None)
        right = hits - wrong
        note = (
            f"{right}/{len(results)} answered from the cache with their own request's answer on the second "
            f"run (new pipeline, same cache folder); {verified} of {hits} hits verified by the answer's "
            f"request digest"
        )
        if wrong:
            note += f", {wrong} returned ANOTHER request's answer"
        note += f"; within the first run {100.0 * within / len(run.results):.0f} % were hits"
        summary = repeat.summary.replace(
            gated=False, gate_note="the repeated run is answered from the cache: it measures the cache"
        )
        observed = {"cache.hit_rate_repeat": 100.0 * right / len(results) if results else math.nan}
        return ScenarioResult("repeat", summary, results, observed, {"cache.hit_rate_repeat": note})

    async def _sweep(self, level: int) -> ScenarioResult:
        name = f"concurrency_{level}"
        items = _unique(self._workload())[: 2 * level]
        async with (
            self._endpoint() as ep,
            self._pipeline(ep, concurrency=level, cache_dir=self._cache_dir(name)) as pipeline,
        ):
            run = await self._drive(name, ep, pipeline, items, level, sweep=True)
        wall, ok = run.summary.wall_s, run.ok
        observed = {f"latency.iteration_mean_c{level}": wall / len(ok) if ok else math.nan}
        notes = {
            f"latency.iteration_mean_c{level}": f"{wall:.2f} s / {len(ok)} successful iterations"
            f"{run.failed_note()}"
        }
        return ScenarioResult(name, run.summary, run.results, observed, notes)

    async def _queue(self) -> ScenarioResult:
        """20 designs at 10 concurrent; the mock serves 5 at a time, so requests wait for it."""
        level = QUEUE_LEVEL
        spec = None
        capacity_note = f"against {self.options.endpoint_shown}"
        if self.options.is_mock:
            profile = load_profile(self.options.profile)
            capacity = max(1, level // 2)
            spec = EndpointSpec("mock", profile=dataclasses.replace(profile, capacity=capacity))
            capacity_note = f"mock serving {capacity} at a time"
        items = _unique(self._workload())[: 2 * level]
        async with (
            self._endpoint(spec) as ep,
            self._pipeline(ep, concurrency=level, cache_dir=self._cache_dir("queue_10")) as pipeline,
        ):
            run = await self._drive("queue_10", ep, pipeline, items, level, require_answers=False)
            queued = ep.core.stats.max_concurrency if ep.core is not None else None
        timeouts = sum(1 for r in run.results if isinstance(r.error, RequestTimeout))
        failed = sum(1 for r in run.results if not r.ok)
        seen = f"; up to {queued} requests at the endpoint at once" if queued is not None else ""
        notes = {
            "concurrency.no_timeouts_c10": f"{failed} of {len(run.results)} failed ({timeouts} timeouts), "
            f"{capacity_note}{seen}; p95 {run.summary.latency_s.p95 or 0:.2f} s"
        }
        observed = {"concurrency.no_timeouts_c10": float(failed)}
        return ScenarioResult("queue_10", run.summary, run.results, observed, notes)

    async def _faults(self) -> ScenarioResult:
        spec = self._mock_spec(profile="fast", faults=dict(FAULT_RATES))
        items = _unique(self._workload())
        level = 20
        async with (
            self._endpoint(spec) as ep,
            self._pipeline(ep, concurrency=level, cache_enabled=False) as pipeline,
        ):
            run = await self._drive("faults", ep, pipeline, items, level, requests=FAULT_REQUESTS)
            stats = ep.core.stats if ep.core is not None else None
        results = run.results
        failed = sum(1 for r in results if not r.ok)
        injected = dict(stats.faults) if stats is not None else {}
        events = sum(injected.values())
        kinds = ", ".join(f"{k} {v}" for k, v in sorted(injected.items()))
        attempts = stats.completions if stats is not None else 0
        note = (
            f"{failed} of {len(results)} failed after retries; {events} faults injected on {attempts} "
            f"attempts ({kinds}), {run.summary.retries} retries; mock fast profile, cache off"
        )
        summary = run.summary.with_info(**{f"injected_{kind}": n for kind, n in injected.items()})
        observed = {"errors.rate_with_retries": 100.0 * failed / len(results) if results else math.nan}
        return ScenarioResult("faults", summary, results, observed, {"errors.rate_with_retries": note})

    def _faults_from_standard(self) -> ScenarioResult:
        """Against a real endpoint nothing is injected: its own failures in the standard run count."""
        standard = self.get("standard")
        results = standard.results
        failed = sum(1 for r in results if not r.ok)
        kinds = standard.summary.error_kinds_text() if standard.summary is not None else ""
        note = (
            f"{failed} of {len(results)} requests of the standard run still failed after retries"
            f"{f' ({kinds})' if kinds else ''}; nothing injected against {self.options.endpoint_shown}"
        )
        observed = {"errors.rate_with_retries": 100.0 * failed / len(results) if results else math.nan}
        return ScenarioResult("faults", None, results, observed, {"errors.rate_with_retries": note})

    async def _retry_bound(self) -> ScenarioResult:
        """A quarter of the requests fail their first max_attempts attempts (they must give up
        after exactly that many), a quarter one fewer (they must succeed on the last)."""
        base_config = IterateConfig.load({}, pyproject=self.pyproject)
        n = base_config.max_attempts
        rules = [f"503x{n}=0.25"] + ([f"503x{n - 1}=0.25"] if n > 1 else [])
        spec = self._mock_spec(profile="fast", faults=rules)
        items = _unique(self._workload())[:RETRY_BOUND_REQUESTS]
        async with (
            self._endpoint(spec) as ep,
            self._pipeline(
                ep, concurrency=10, cache_enabled=False, backoff_initial_s=0.001, backoff_max_s=0.01
            ) as pipeline,
        ):
            run = await self._drive("retry_bound", ep, pipeline, items, 10, require_answers=False)
            assert ep.core is not None
            stats = ep.core.stats
        beyond = sum(count for attempts, count in stats.attempts.items() if attempts > n)
        unhandled = sum(
            1 for r in run.results if r.error is not None and not isinstance(r.error, IterateError)
        )
        unhandled += len(items) - len(run.results)  # a send that raised never reached the results
        gave_up = sum(1 for r in run.results if not r.ok)
        histogram = ", ".join(f"{k} attempts: {v}" for k, v in sorted(stats.attempts.items()))
        note = (
            f"{beyond} requests made more than max_attempts={n} attempts (counted by the mock per "
            f"request id: {histogram}); {unhandled} unhandled; {gave_up} of {len(items)} gave up as "
            f"scripted"
        )
        observed = {"retries.bounded": float(beyond + unhandled)}
        return ScenarioResult("retry_bound", run.summary, run.results, observed, {"retries.bounded": note})

    async def _long_context(self) -> ScenarioResult:
        items = self._workload(long=True)
        spec = None
        overrides: dict[str, Any] = {"cache_dir": self._cache_dir("long_context")}
        if self.options.is_mock:
            spec = EndpointSpec("mock", profile=self.options.profile, context_window=LONG_CONTEXT_WINDOW)
            if not self._explicit("context_window"):  # what the pipeline believes the window is
                overrides["context_window"] = LONG_CONTEXT_WINDOW
        level = self._top
        async with self._endpoint(spec) as ep, self._pipeline(ep, concurrency=level, **overrides) as pipeline:
            run = await self._drive("long_context", ep, pipeline, items, level, require_answers=False)
            registry = pipeline.metrics.registry
            by_mock = ep.core.stats.faults.get("context_length_exceeded", 0) if ep.core is not None else 0
        # every refusal for length counts, repaired or not: the guard's own count, the requests
        # it could not repair, and the endpoint's count where it keeps one (the mock)
        by_guard = registry.get_sample_value("iterate_token_guard_actions_total", {"action": "rejected"})
        unrepaired = sum(
            1 for r in run.results if isinstance(r.error, HTTPStatusError) and is_context_error(r.error)
        )
        rejected = max(int(by_guard or 0), unrepaired, by_mock)
        unflagged = sum(1 for r in run.results if r.ok and not r.complete and not r.partial)
        flagged = sum(1 for r in run.results if r.partial or r.warnings)
        observed = {"tokens.no_overflow": float(rejected + unflagged)}
        notes = {
            "tokens.no_overflow": f"{rejected} requests refused for length before any repair, {unflagged} "
            f"neither complete nor flagged; {flagged} flagged partial of "
            f"{len(run.results)}{run.failed_note()}"
        }
        return ScenarioResult("long_context", run.summary, run.results, observed, notes)

    async def _saturation(self) -> ScenarioResult:
        """The pipeline served over HTTP with 2 slots and a queue of 2: 4 requests fill it, then 8
        more arrive at once and each must get a 503 at once, with its retry-after headers.

        On the mock the calls take 10 s (the profile's time to first token), so the 4 hold the
        service for the whole probe; each of the 8 is timed by its client over a warm
        connection, from its send to the end of its answer."""
        items = _unique(self._workload())[:SATURATION_REQUESTS]
        holders, probes = items[:4], items[4:]
        spec = None
        if self.options.is_mock:
            profile = dataclasses.replace(
                load_profile(self.options.profile), ttft_base=Distribution("fixed", 10.0)
            )
            spec = EndpointSpec("mock", profile=profile)
        samples: list[RequestSample] = []
        busy: list[tuple[float, dict[str, str]]] = []  # (ms over HTTP, headers) of each 503
        async with (
            self._endpoint(spec) as ep,
            self._pipeline(
                ep, concurrency=2, cache_enabled=False, max_concurrent_requests=2, max_queue=2
            ) as pipeline,
            PipelineService(pipeline.config, pipeline=pipeline) as service,
            aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session,
        ):
            url = service.base_url + "/chat/completions"
            model = pipeline.services.model
            throttle = getattr(pipeline.client, "throttle", None)

            async def health() -> None:
                async with session.get(service.url + "/health") as resp:
                    await resp.read()

            async def ask(item: DesignRequest) -> None:
                body = pipeline.services.builder.build(item).body(model)
                start = time.perf_counter()
                async with session.post(url, json=body) as resp:
                    await resp.read()
                    end = time.perf_counter()
                    ok = resp.status == 200
                    kind = None if ok else ("Busy" if resp.status == 503 else f"HTTP {resp.status}")
                    samples.append(RequestSample(start, start, end, ok=ok, error_kind=kind, key=item.id))
                    if resp.status == 503:
                        busy.append((1000.0 * (end - start), {k.lower(): v for k, v in resp.headers.items()}))

            # what a first request pays once (the tokenizer's tables, the connections) is paid
            # before: the busy answers measured are the saturated service's, not its cold start's
            if pipeline.guard is not None:
                pipeline.guard.check(pipeline.services.builder.build(items[0]))
            await asyncio.gather(*(health() for _ in range(len(items))))
            holding = [asyncio.create_task(ask(item)) for item in holders]
            deadline = time.monotonic() + 10.0
            while (
                throttle is not None
                and throttle.inflight + throttle.waiting < 4
                and time.monotonic() < deadline
            ):
                await asyncio.sleep(0.005)
            asking = [asyncio.create_task(ask(item)) for item in probes]
            while not all(t.done() for t in asking) and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            for t in (*holding, *asking):
                t.cancel()
            await asyncio.gather(*holding, *asking, return_exceptions=True)
        with_retry = [h for _, h in busy if h.get("retry-after") and h.get("retry-after-ms")]
        worst_ms = max((ms for ms, _ in busy), default=math.nan)
        observed = {"degradation.busy_fast": worst_ms if busy and len(with_retry) == len(busy) else math.nan}
        notes = {
            "degradation.busy_fast": f"{len(busy)} 503 busy answers over HTTP of {len(probes)} requests sent "
            f"while {len(holders)} held the service (2 slots, queue 2), {len(with_retry)} with Retry-After "
            f"and retry-after-ms; slowest {worst_ms:.1f} ms"
        }
        summary = summarize("saturation", samples, max((s.end_s for s in samples), default=0.0))
        summary = summary.replace(
            endpoint=ep.label,
            concurrency=len(items),
            gated=False,
            gate_note="the saturation probe measures how fast the busy answer comes, not the endpoint",
        ).with_info(busy=len(busy))
        return ScenarioResult("saturation", summary, [], observed, notes)

    async def _rate_limit(self) -> ScenarioResult:
        """The mock with request and token limits nearly spent: no 429, no failure, the allowed rate."""
        rps, headroom_s, n = RATE_LIMIT_RPS, RATE_LIMIT_HEADROOM_S, RATE_LIMIT_REQUESTS
        items = _unique(self._workload())
        base = IterateConfig.load({}, pyproject=self.pyproject)
        builder = PromptBuilder(default_max_tokens=base.default_max_tokens, counter=TokenCounter())
        charge: dict[str, int] = {}  # what the mock's token limit charges each design
        for item in items:
            request = builder.build(item)
            charge[item.id] = builder.count_prompt(request) + (request.max_tokens or 0)
        sent = [items[i % len(items)] for i in range(n)]
        mean_charge = math.fsum(charge[d.id] for d in sent) / n
        rpm, tpm = rps * 60.0, rps * mean_charge * 60.0
        left = {"requests": rps * headroom_s, "tokens": rps * mean_charge * headroom_s}
        limiter = RateLimiter(
            rpm, tpm, used_requests=rpm - left["requests"], used_tokens=tpm - left["tokens"]
        )
        spec = self._mock_spec(profile="fast", mock_options={"rate_limit": limiter})
        expected_s = (n - left["requests"]) / rps
        results: list[PipelineResult] = []
        async with (
            self._endpoint(spec) as ep,
            self._pipeline(ep, concurrency=RATE_LIMIT_CONCURRENCY, cache_enabled=False) as pipeline,
        ):
            allowed_s = 2.0 * expected_s + 5.0
            deadline = asyncio.get_running_loop().time() + allowed_s

            async def send(item: DesignRequest) -> PipelineResult:
                async with asyncio.timeout_at(deadline):  # a throttle that stalls is cut, not waited for
                    result = await pipeline.run(item)
                results.append(result)
                return result

            run = await run_load(send, items, ClosedLoop(RATE_LIMIT_CONCURRENCY), requests=n)
            assert ep.core is not None
            rejected = ep.core.stats.statuses.get(429, 0)
        summary = run.summary("rate_limit").replace(
            concurrency=RATE_LIMIT_CONCURRENCY,
            endpoint=f"{ep.label} with {rpm:g} requests/min and {tpm:.0f} tokens/min",
            gated=False,
            gate_note="paced by the mock's rate limits: it measures the throttle's pacing",
        )
        ok = [r for r in results if r.ok]
        failed = n - len(ok)
        wall = summary.wall_s
        # a run that lost requests did not do its work in its wall time: it is held to the time
        # it had (requests failing fast must not make the rest look quick)
        horizon = wall if not failed else max(wall, allowed_s)
        used = {"requests": float(len(ok)), "tokens": math.fsum(charge[r.request_id] for r in ok)}
        allowed = {
            "requests": left["requests"] + rps * horizon,
            "tokens": left["tokens"] + tpm / 60.0 * horizon,
        }
        shares = {name: 100.0 * used[name] / allowed[name] for name in used}
        binding = max(shares, key=lambda name: shares[name])
        cut = sum(1 for s in run.samples if s.error_kind == "TimeoutError")
        observed = {
            "ratelimit.rejected": 100.0 * (rejected + failed) / n,
            "ratelimit.rate_achieved": shares[binding],
        }
        limits = f"{rps:g} requests/s and {tpm / 60.0:.0f} tokens/s allowed, {headroom_s:g} s of each left"
        cut_note = f" ({cut} cut at the deadline)" if cut else ""
        notes = {
            "ratelimit.rejected": f"{rejected} 429 answers and {failed} failed requests{cut_note} of {n} at "
            f"{RATE_LIMIT_CONCURRENCY} concurrent; {limits}",
            "ratelimit.rate_achieved": f"{len(ok)} of {n} answered in {wall:.2f} s: "
            f"{shares['requests']:.1f} % of the requests and {shares['tokens']:.1f} % of the tokens "
            "the limits allowed over "
            + (
                f"the run ({binding} bind)"
                if not failed
                else f"the {horizon:.0f} s the run had ({failed} lost)"
            )
            + f"; {limits}",
        }
        return ScenarioResult("rate_limit", summary, results, observed, notes)

    async def _metrics(self) -> ScenarioResult:
        standard = self.results["standard"]
        registry = standard.metrics
        assert registry is not None, "the standard scenario keeps its pipeline's metrics"
        async with (
            MetricsServer(registry) as server,
            aiohttp.ClientSession() as session,
            session.get(server.url) as resp,
        ):
            text = await resp.text()
        problems = metrics_mismatches(text, METRIC_NAMES, standard.results, STAGE_NAMES)
        observed = {"observability.metrics_endpoint": float(len(problems))}
        notes = {
            "observability.metrics_endpoint": f"scraped {server.url}: "
            + (
                "; ".join(problems)
                if problems
                else "every name present, requests, stage counts and cache hits agree with the run"
            )
        }
        return ScenarioResult("metrics", None, [], observed, notes)

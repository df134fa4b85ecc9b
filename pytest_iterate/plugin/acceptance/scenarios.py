"""The acceptance scenarios: each runs ONCE per session and is shared by its criteria.

:class:`ScenarioRunner` ``.get(name)`` runs a scenario on first use (in its own event
loop, its own endpoint and pipeline, a fresh cache folder) and caches the
:class:`ScenarioResult`; ``.observe(criterion_id)`` returns the observed value of a
criterion from the scenario it reads. A ``progress`` reporter shows each load run
while it runs (a live line on a terminal) and its summary line when it ends. What is
measured is the design-iteration :class:`~pytest_iterate.pipeline.runner.Pipeline`,
stage by stage, driven by the harness's closed-loop runner; the endpoint is the
embedded loopback mock (or a real URL, where fault-injection scenarios raise
:class:`NeedsMock`).

Scenarios (``standard`` and ``concurrency_N`` carry ``"sweep": true`` in their summary: they
are the points of the report's throughput-vs-p95 plot):

``standard``        the workload (100 designs, duplicates) at the top concurrency level;
                    e2e/overhead latency, throughput, 100-designs wall time, CPU, stage logs
``repeat``          the same workload again, same endpoint, through a NEW pipeline on the
                    standard run's cache folder (as the next CI run would): its hit rate
``concurrency_N``   2N unique designs at concurrency N, fresh cache (the sweep)
``faults``          the workload with 1 % 429 + 1 % 503 injected: error rate, bounded retries
``long_context``    the long-context workload against the profile's window: overflows
``saturation``      2 slots, queue 2, 12 requests at once: how fast ``Busy`` answers
``metrics``         ``/metrics`` of the standard run's registry served and scraped over HTTP
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import math
import os
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from pytest_iterate.client.config import IterateConfig
from pytest_iterate.client.errors import Busy, ClientError, IterateError, RequestTimeout
from pytest_iterate.client.metrics import METRIC_NAMES, IterateMetrics
from pytest_iterate.client.metrics_server import MetricsServer
from pytest_iterate.client.telemetry import JsonFormatter
from pytest_iterate.endpoint import Endpoint, EndpointSpec, open_endpoint, probe_endpoint
from pytest_iterate.harness.loads import ClosedLoop
from pytest_iterate.harness.progress import ScenarioReporter
from pytest_iterate.harness.runner import run_load
from pytest_iterate.harness.samples import sample_from_pipeline_result
from pytest_iterate.harness.stats import summarize
from pytest_iterate.harness.summary import ScenarioSummary
from pytest_iterate.pipeline.runner import Pipeline, PipelineResult
from pytest_iterate.pipeline.stages import STAGE_NAMES
from pytest_iterate.pipeline.workload import load_workload, long_context_workload_path, standard_workload_path
from pytest_iterate.plugin.acceptance.criteria import CRITERIA_BY_ID
from pytest_iterate.plugin.options import IterateOptions

__all__ = [
    "METRIC_NAMES",
    "NeedsMock",
    "NoMeasurement",
    "ScenarioResult",
    "ScenarioRunner",
    "available_cores",
]

FAULT_RATES = {"429": 0.01, "503": 0.01}
LONG_CONTEXT_WINDOW = 2048  # the mock's window for the long-context workload (the real server's n_ctx)


class NeedsMock(Exception):
    """A scenario needs fault injection, which only the embedded mock can do."""


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
    cache_dir: str | None = None


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def _unique(items: Sequence[Any]) -> list[Any]:
    seen: set[str] = set()
    out = []
    for item in items:
        if item.id not in seen:
            seen.add(item.id)
            out.append(item)
    return out


@contextlib.contextmanager
def _captured_stage_logs() -> Iterator[tuple[logging.Logger, io.StringIO]]:
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


def _stage_log_counts(text: str) -> dict[str, int]:
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


def _require_an_answer(name: str, summary: ScenarioSummary, results: Sequence[PipelineResult]) -> None:
    """Raise :class:`NoMeasurement` when no request of the run got an answer (a refusal
    by the token guard counts as an answer: it is the policy working)."""
    if summary.all_failed(ignore=("ContextOverflow",)):
        first = next(r.error for r in results if r.error is not None)
        raise NoMeasurement(
            f"scenario {name!r}: all {summary.requests} requests failed against "
            f"{summary.endpoint or 'the endpoint'}; first error: {type(first).__name__}: {first}"
        )


def _errors_note(summary: ScenarioSummary) -> str:
    """``"; 3 of 100 requests failed (RequestTimeout 3)"`` or ``""``."""
    if not summary.errors:
        return ""
    return f"; {summary.errors} of {summary.requests} requests failed ({summary.error_kinds_text()})"


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else math.nan


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
            "faults": self._faults,
            "long_context": self._long_context,
            "saturation": self._saturation,
        }

    # -- public -----------------------------------------------------------------------
    def get(self, name: str) -> ScenarioResult:
        """The result of scenario ``name``, running it on first use (a failure is re-raised each time)."""
        if name in self.results:
            return self.results[name]
        if name in self._failed:
            raise self._failed[name]
        try:
            if name in ("repeat", "metrics"):
                self.get("standard")  # the standard run also makes the repeat run
                if name == "repeat":
                    return self.results["repeat"]
            if name == "metrics":
                result = self._metrics()
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
    def _workload(self, long: bool = False) -> list[Any]:
        if long:
            return load_workload(long_context_workload_path())
        return load_workload(self.options.workload or standard_workload_path())

    def _cache_dir(self, name: str) -> str:
        path = self.workdir / f"cache-{name}"
        path.mkdir(parents=True, exist_ok=True)
        return str(path)

    @contextlib.asynccontextmanager
    async def _pipeline(
        self, endpoint: Endpoint, *, logger: logging.Logger | None = None, **overrides: Any
    ) -> AsyncIterator[Pipeline]:
        """A pipeline for ``endpoint`` built from the options and ``[tool.iterate]``."""
        opts = self.options
        values = endpoint.config_values(
            model=opts.model, api_key_env=opts.api_key_env, store_path=":memory:", **overrides
        )
        config = IterateConfig.load(values, pyproject=self.pyproject)
        parts: dict[str, Any] = {} if logger is None else {"logger": logger}
        async with endpoint.pipeline(config, **parts) as pipeline:
            yield pipeline

    @contextlib.asynccontextmanager
    async def _endpoint(
        self, faults: Mapping[str, float] | None = None, context_window: int | None = None
    ) -> AsyncIterator[Endpoint]:
        opts = self.options
        if faults and not opts.is_mock:
            raise NeedsMock(
                f"needs fault injection, which only the embedded mock can do: skipped against {opts.endpoint}"
            )
        spec = EndpointSpec(
            opts.endpoint,
            profile=opts.profile,
            faults=faults,
            context_window=context_window if opts.is_mock else None,
            cassette=opts.cassette,
            record_mode=opts.record_mode,
            replay_timing=opts.replay_timing,
        )
        if spec.external and spec.needs_server:
            await self._check_reachable()
        async with open_endpoint(spec) as ep:
            yield ep

    async def _check_reachable(self) -> None:
        """Probe a real endpoint once per session, so a wrong URL fails every criterion in
        seconds, with the reason, instead of after a workload of retries."""
        if not self._probed:
            self._unreachable = await probe_endpoint(self.options.endpoint)
            self._probed = True
        if self._unreachable is not None:
            raise NoMeasurement(
                f"endpoint {self.options.endpoint} is unreachable ({self._unreachable}); "
                "start the server or fix --iterate-endpoint"
            )

    async def _drive(
        self,
        name: str,
        pipeline: Pipeline,
        items: Sequence[Any],
        concurrency: int,
        *,
        endpoint: str,
        sweep: bool = False,
    ) -> tuple[ScenarioSummary, list[PipelineResult], float]:
        """Closed-loop run of ``items`` through ``pipeline``; (summary, results in send order, cpu %)."""
        results: list[PipelineResult] = []

        async def send(item: Any) -> Any:
            result = await pipeline.run(item)
            results.append(result)
            return result

        live = self.progress.start(name, len(items)) if self.progress is not None else None
        cpu0 = time.process_time()
        run = await run_load(send, list(items), ClosedLoop(concurrency), requests=len(items), progress=live)
        cpu = time.process_time() - cpu0
        cpu_pct = 100.0 * cpu / run.wall_s / available_cores() if run.wall_s > 0 else math.nan
        summary = run.summary(name).replace(
            concurrency=concurrency, cpu_percent=cpu_pct, endpoint=endpoint, sweep=sweep
        )
        if self.progress is not None:
            self.progress.finish(summary)
        _require_an_answer(name, summary, results)
        return summary, results, cpu_pct

    # -- scenarios --------------------------------------------------------------------
    async def _standard(self) -> ScenarioResult:
        """The standard run, then (same endpoint, new pipeline, same cache folder) the repeat run."""
        items = self._workload()
        level = max(self.options.concurrency)
        cache_dir = self._cache_dir("standard")
        with _captured_stage_logs() as (logger, stream):
            async with self._endpoint() as ep:
                # as many requests in flight as the level asks (the default limit of 10 would
                # queue the rest in the client's throttle and measure that instead)
                async with self._pipeline(
                    ep, cache_dir=cache_dir, logger=logger, max_concurrent_requests=level
                ) as pipeline:
                    summary, results, cpu_pct = await self._drive(
                        "standard", pipeline, items, level, endpoint=ep.label, sweep=True
                    )
                async with self._pipeline(ep, cache_dir=cache_dir, max_concurrent_requests=level) as again:
                    repeat_summary, repeat_results, _ = await self._drive(
                        "repeat", again, items, level, endpoint=ep.label
                    )
            logged = _stage_log_counts(stream.getvalue())
        ok = [r for r in results if r.ok]
        wall = summary.wall_s
        stage_ok = sum(min(logged.get(s, 0), len(results)) for s in STAGE_NAMES)
        observed = {
            "latency.e2e_mean": summary.latency_s.mean if summary.latency_s.mean is not None else math.nan,
            "latency.overhead_mean": _mean([r.overhead_s for r in results]),
            "throughput.requests_per_min": 60.0 * len(ok) / wall if wall > 0 else math.nan,
            "throughput.designs_100": wall * 100.0 / len(items) if items else math.nan,
            "cpu.utilization": cpu_pct,
            "observability.stage_logs": 100.0 * stage_ok / (len(results) * len(STAGE_NAMES))
            if results
            else math.nan,
        }
        failed = _errors_note(summary)
        notes = {
            "latency.e2e_mean": f"mean over {len(results)} requests{failed}",
            "latency.overhead_mean": f"mean over {len(results)} requests{failed}",
            "throughput.requests_per_min": f"{len(ok)} answered in {wall:.2f} s{failed}",
            "throughput.designs_100": f"{len(items)} designs in {wall:.2f} s at concurrency {level}{failed}",
            "cpu.utilization": f"process CPU / wall / {available_cores()} cores",
            "observability.stage_logs": f"{stage_ok} JSON stage log lines with start_s and duration_s "
            f"of {len(results) * len(STAGE_NAMES)} expected",
        }
        hits = sum(1 for r in repeat_results if r.cache_tier)
        self.results["repeat"] = ScenarioResult(
            "repeat",
            repeat_summary.replace(
                gated=False, gate_note="the repeated run is answered from the cache: it measures the cache"
            ),
            repeat_results,
            {"cache.hit_rate_repeat": 100.0 * hits / len(repeat_results) if repeat_results else math.nan},
            {
                "cache.hit_rate_repeat": f"{hits}/{len(repeat_results)} answered from the cache on the "
                "second run (new pipeline, same cache folder)"
            },
        )
        return ScenarioResult("standard", summary, results, observed, notes, pipeline.metrics, cache_dir)

    async def _sweep(self, level: int) -> ScenarioResult:
        name = f"concurrency_{level}"
        items = _unique(self._workload())[: 2 * level]
        async with (
            self._endpoint() as ep,
            self._pipeline(
                ep, cache_dir=self._cache_dir(name), max_concurrent_requests=max(level, 1)
            ) as pipeline,
        ):
            summary, results, _ = await self._drive(
                name, pipeline, items, level, endpoint=ep.label, sweep=True
            )
        timeouts = sum(1 for r in results if isinstance(r.error, RequestTimeout))
        wall = summary.wall_s
        observed = {
            f"latency.iteration_mean_c{level}": wall / len(results) if results else math.nan,
            f"concurrency.no_timeouts_c{level}": float(timeouts),
        }
        notes = {
            f"latency.iteration_mean_c{level}": f"{wall:.2f} s / {len(results)} iterations"
            f"{_errors_note(summary)}"
        }
        return ScenarioResult(name, summary, results, observed, notes)

    async def _faults(self) -> ScenarioResult:
        items = self._workload()
        level = max(self.options.concurrency)
        async with (
            self._endpoint(FAULT_RATES) as ep,
            self._pipeline(
                ep, cache_dir=self._cache_dir("faults"), max_concurrent_requests=level
            ) as pipeline,
        ):
            summary, results, _ = await self._drive("faults", pipeline, items, level, endpoint=ep.label)
            max_attempts = pipeline.config.max_attempts
        failed = [r for r in results if not r.ok]
        beyond = sum(1 for r in results if r.attempts > max_attempts)
        unhandled = sum(1 for r in failed if not isinstance(r.error, IterateError))
        unhandled += len(items) - len(results)  # a send that raised never reached `results`
        injected = dict(getattr(getattr(ep.core, "stats", None), "faults", {}) or {})
        observed = {
            "errors.rate_with_retries": 100.0 * len(failed) / len(items) if items else math.nan,
            "retries.bounded": float(beyond + unhandled),
        }
        notes = {
            "errors.rate_with_retries": f"{len(failed)} of {len(items)} failed after retries; "
            f"retries {summary.retries}; injected {injected or FAULT_RATES}",
            "retries.bounded": f"{beyond} over max_attempts={max_attempts}, {unhandled} unhandled",
        }
        summary = summary.with_info(**{f"injected_{kind}": n for kind, n in injected.items()})
        return ScenarioResult("faults", summary, results, observed, notes)

    async def _long_context(self) -> ScenarioResult:
        items = self._workload(long=True)
        async with self._endpoint(context_window=LONG_CONTEXT_WINDOW) as ep:
            overrides: dict[str, Any] = {
                "cache_dir": self._cache_dir("long_context"),
                "max_concurrent_requests": max(self.options.concurrency),
            }
            if ep.context_window:
                overrides["context_window"] = ep.context_window
            async with self._pipeline(ep, **overrides) as pipeline:
                summary, results, _ = await self._drive(
                    "long_context", pipeline, items, max(self.options.concurrency), endpoint=ep.label
                )
        over = sum(1 for r in results if isinstance(r.error, ClientError) and r.error.status == 400)
        unflagged = sum(1 for r in results if r.ok and not r.complete and not r.partial)
        flagged = sum(1 for r in results if r.partial or r.warnings)
        observed = {"tokens.no_overflow": float(over + unflagged)}
        notes = {
            "tokens.no_overflow": f"{over} over the window, {unflagged} neither complete nor flagged; "
            f"{flagged} flagged partial of {len(results)}{_errors_note(summary)}"
        }
        return ScenarioResult("long_context", summary, results, observed, notes)

    async def _saturation(self) -> ScenarioResult:
        items = _unique(self._workload())[:12]
        async with (
            self._endpoint() as ep,
            self._pipeline(
                ep, cache_enabled=False, max_concurrent_requests=2, max_queue=2
            ) as pipeline,
        ):
            tasks = [asyncio.create_task(pipeline.run(item, index=i)) for i, item in enumerate(items)]
            deadline = time.monotonic() + 10.0
            while sum(t.done() for t in tasks) < len(tasks) - 4 and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            done = [t.result() for t in tasks if t.done() and not t.cancelled()]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        busy = [r for r in done if isinstance(r.error, Busy)]
        with_retry = [r for r in busy if getattr(r.error, "retry_after_s", 0) > 0]
        worst_ms = max((r.total_s * 1000.0 for r in busy), default=math.nan)
        observed = {"degradation.busy_fast": worst_ms if len(with_retry) == len(busy) else math.nan}
        notes = {
            "degradation.busy_fast": f"{len(busy)} busy answers of {len(items)} (2 slots, queue 2), "
            f"{len(with_retry)} with retry-after; slowest {worst_ms:.1f} ms"
        }
        samples = [sample_from_pipeline_result(r, 0.0, 0.0) for r in done]
        summary = summarize("saturation", samples, max((s.end_s for s in samples), default=0.0))
        summary = summary.replace(
            endpoint=ep.label,
            concurrency=len(items),
            gated=False,
            gate_note="the saturation probe measures how fast Busy answers, not the endpoint",
        ).with_info(busy=len(busy))
        return ScenarioResult("saturation", summary, done, observed, notes)

    def _metrics(self) -> ScenarioResult:
        registry = self.get("standard").metrics
        assert registry is not None, "the standard scenario keeps its pipeline's metrics"

        async def scrape() -> tuple[str, str]:
            async with (
                MetricsServer(registry) as server,
                aiohttp.ClientSession() as session,
                session.get(server.url) as resp,
            ):
                return server.url, await resp.text()

        url, text = asyncio.run(scrape())
        missing = [n for n in METRIC_NAMES if n not in text]
        observed = {"observability.metrics_endpoint": float(len(missing))}
        notes = {"observability.metrics_endpoint": f"scraped {url}: missing {missing or 'none'}"}
        return ScenarioResult("metrics", None, [], observed, notes)

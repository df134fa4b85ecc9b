"""``iterate-bench``: run load against an endpoint, compare runs, serve the mock.

    iterate-bench run --concurrency 1,5,10 --requests 100 --report-dir reports
    iterate-bench run --rate 5 --duration 30 --target http://127.0.0.1:8080/v1
    iterate-bench run --saturate --slo p95=2.0
    iterate-bench run --workload prompts.jsonl --model smollm2 --stream --rate 2 --duration 60
    iterate-bench run --synthetic prompt_tokens=512,output_tokens=128 --concurrency 4
    iterate-bench run --raw --rate 4000 --duration 30 --workers 2 --target http://127.0.0.1:8080/v1
    iterate-bench compare reports/baseline.json reports/iterate-report.json --fail-on p95:10%
    iterate-bench serve-mock --profile v1
    iterate-bench serve-loopback --latency 0.05
    iterate-bench serve-pipeline --upstream http://127.0.0.1:8000/v1

``run`` exits 1 when every request of a scenario failed (nothing was measured; the
reports are still written), 2 on a bad option. ``compare`` exits 1 on a regression,
0 otherwise (also when the baseline does not exist yet: that is the first run, and it
says so). Definitions of every statistic:
``harness/DEFINITIONS.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from pytest_iterate import __version__
from pytest_iterate._serving import until_stopped
from pytest_iterate.client.config import IterateConfig
from pytest_iterate.client.secret import redact_url
from pytest_iterate.client.values import to_env_var_name, to_float, to_float_list, to_int, to_int_list
from pytest_iterate.doubles.loopback import LoopbackServer
from pytest_iterate.doubles.mock import cli as mock_cli
from pytest_iterate.endpoint import EndpointSpec, open_endpoint
from pytest_iterate.harness.compare import (
    DEFAULT_ALPHA,
    DEFAULT_MIN_DELTA_S,
    BaselineMissing,
    compare,
    load_baseline,
    parse_rule,
)
from pytest_iterate.harness.fmt import seconds
from pytest_iterate.harness.limits import ClientLimits, client_limits, raise_open_files_limit
from pytest_iterate.harness.loads import ClosedLoop, ConstantRate, LoadShape, Poisson
from pytest_iterate.harness.paths import user_cache_dir
from pytest_iterate.harness.progress import Progress, scenario_line
from pytest_iterate.harness.reports import ALL_FORMATS, json_report, prom_report, write_reports
from pytest_iterate.harness.runner import min_step_requests, parse_slo, run_load, saturate
from pytest_iterate.harness.samples import RequestSample
from pytest_iterate.harness.summary import CriterionResult, Report, ScenarioSummary
from pytest_iterate.harness.targets import SendOptions, Target, open_target
from pytest_iterate.harness.transport import parse_header
from pytest_iterate.harness.workers import (
    WorkerError,
    WorkerPool,
    WorkerSetup,
    per_worker_shape,
    plan_step,
)
from pytest_iterate.harness.workloads import API_KINDS, SyntheticSpec, Workload, choose_workload
from pytest_iterate.service import cli as service_cli

__all__ = ["build_parser", "main"]

T = TypeVar("T")


def _arg(parse: Callable[[str], T]) -> Callable[[str], T]:
    """An argparse ``type`` from a :mod:`pytest_iterate.client.values` parser."""

    def parse_arg(text: str) -> T:
        try:
            return parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return parse_arg


_positive_int = _arg(lambda text: to_int(text, minimum=1))
_non_negative_int = _arg(lambda text: to_int(text, minimum=0))
_positive_float = _arg(lambda text: to_float(text, above=0))
_non_negative_float = _arg(lambda text: to_float(text, minimum=0))
_int_list = _arg(lambda text: list(to_int_list(text, minimum=1)))
_float_list = _arg(lambda text: list(to_float_list(text, above=0)))


def _slo(text: str) -> dict[str, float]:
    try:
        return parse_slo(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _synthetic(text: str) -> SyntheticSpec:
    try:
        return SyntheticSpec.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _header(text: str) -> tuple[str, str]:
    try:
        return parse_header(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


_env_name = _arg(to_env_var_name)


def _rule(text: str) -> str:
    try:
        parse_rule(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _formats(text: str) -> list[str]:
    fmts = [f.strip() for f in text.split(",") if f.strip()]
    bad = [f for f in fmts if f not in ALL_FORMATS]
    if bad or not fmts:
        raise argparse.ArgumentTypeError(f"{text!r}: unknown format(s) {bad}; valid: {','.join(ALL_FORMATS)}")
    return fmts


_RUN_EPILOG = """\
environment variables (a flag wins over its variable, a variable over [tool.iterate] in
pyproject.toml, that over the default):
  ITERATE_MODEL            the model named in requests (--model)
  ITERATE_API_KEY_ENV      the variable holding the API key (--api-key-env; default OPENAI_API_KEY)
  OPENAI_API_KEY           the API key itself, sent as "Authorization: Bearer ..." when set
  ITERATE_CACHE_DIR        the response cache folder under --cache (--cache-dir)
  ITERATE_REQUEST_TIMEOUT_S, ITERATE_MAX_ATTEMPTS, ITERATE_*   any other client setting
  CI                       set to true: no live progress line (one line per step instead)

limits: the pipeline's concurrency limit and connection pool follow the load (N for
--concurrency N; rate x the longest a request can take for --rate and --poisson), so
nothing caps the requests in flight below what the load asks; each step prints and the
report records the most requests seen in flight (max_inflight). With --workers N, each
worker gets the limits of its share (a closed loop's users, an open loop's rate / N), and
max_inflight is the sum of the workers' peaks.
"""


def _add_run(sub: Any) -> None:
    p = sub.add_parser(
        "run",
        help="run load against an endpoint and write reports",
        description="Run load against an endpoint and write reports.",
        epilog=_RUN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--target",
        default="mock",
        help="mock (the project's loopback mock server, default), inprocess (the mock behind a respx "
        "router), loopback (a neutral server answering after --mock-latency) or an http(s):// base URL",
    )
    what = p.add_argument_group("what to send (default: the standard design workload)")
    kinds = what.add_mutually_exclusive_group()
    kinds.add_argument(
        "--workload",
        default=None,
        metavar="FILE",
        help='JSONL of prompts ({"prompt": ...}), chat transcripts ({"messages": [...]}) or designs '
        "(the kind is told by the first record)",
    )
    kinds.add_argument(
        "--synthetic",
        type=_synthetic,
        default=None,
        metavar="SPEC",
        help="synthetic prompts of given token lengths, e.g. prompt_tokens=512,output_tokens=128"
        "[,spread=0.1][,count=100][,seed=0] (offline cl100k tokenizer)",
    )
    what.add_argument(
        "--api",
        choices=API_KINDS,
        default="chat",
        help="where prompt and synthetic requests go: /chat/completions (default) or /completions",
    )
    what.add_argument("--model", default=None, help="model named in every request (env ITERATE_MODEL)")
    what.add_argument(
        "--api-key-env",
        type=_env_name,
        default=None,
        metavar="NAME",
        help="environment variable holding the API key (default OPENAI_API_KEY; env ITERATE_API_KEY_ENV); "
        "named here, it must be set",
    )
    what.add_argument(
        "--header",
        dest="headers",
        action="append",
        type=_header,
        default=None,
        metavar="NAME:VALUE",
        help="extra HTTP header on every request, repeatable (values never reach the report)",
    )
    what.add_argument("--max-tokens", type=_positive_int, default=None, help="max_tokens of every request")
    what.add_argument(
        "--stream",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="ask for streamed answers (SSE): measures TTFT and inter-token latency (default: --no-stream)",
    )
    load = p.add_argument_group("load shape (default: --concurrency 1)")
    load.add_argument("--concurrency", type=_int_list, default=None, help="closed-loop sweep, e.g. 1,5,10")
    load.add_argument("--rate", type=_float_list, default=None, help="constant-rate open loop, requests/s")
    load.add_argument("--poisson", type=_float_list, default=None, help="poisson open loop, mean requests/s")
    load.add_argument("--seed", type=int, default=0, help="seed of the poisson arrivals")
    load.add_argument("--requests", type=_positive_int, default=None, help="requests per step")
    load.add_argument("--duration", type=_positive_float, default=None, help="seconds per step")
    load.add_argument(
        "--warmup",
        type=_non_negative_int,
        default=0,
        help="requests sent at the start of every step (saturation steps too), not measured",
    )
    load.add_argument("--saturate", action="store_true", help="find the highest rate meeting --slo")
    load.add_argument("--slo", type=_slo, default=None, help="latency objective, e.g. p95=2.0 (seconds)")
    load.add_argument("--max-rate", type=_positive_float, default=10_000.0, help="upper bound of --saturate")
    how = p.add_argument_group("how")
    how.add_argument("--profile", default=None, help="latency profile of the project mock, e.g. v1, fast")
    how.add_argument(
        "--mock-latency",
        type=_non_negative_float,
        default=0.05,
        help="fixed latency (s) of the loopback target",
    )
    how.add_argument("--raw", action="store_true", help="bare HTTP POSTs instead of the pipeline")
    how.add_argument(
        "--workers",
        type=_positive_int,
        default=1,
        metavar="N",
        help="send from N processes on this machine (default 1): an open loop's one schedule is dealt "
        "round-robin, a closed loop's users split; one report over every sample. The mock and loopback "
        "targets are served by the parent process",
    )
    how.add_argument(
        "--cache",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="answer repeated requests from the pipeline's response cache (default: --no-cache, every "
        "request reaches the endpoint)",
    )
    how.add_argument(
        "--cache-dir",
        default=None,
        metavar="DIR",
        help="the response cache's folder under --cache "
        f"(default: ITERATE_CACHE_DIR, else {user_cache_dir() / 'responses'})",
    )
    out = p.add_argument_group("output")
    out.add_argument("--report-dir", default="reports", help="output folder (default: reports)")
    out.add_argument(
        "--formats", type=_formats, default=None, help="json,md,html,benchmark,prom (default all)"
    )
    out.add_argument("--pushgateway", default=None, help="push metrics.prom's gauges to this Pushgateway")
    out.add_argument("--quiet", action="store_true", help="no progress line")


def _add_compare(sub: Any) -> None:
    p = sub.add_parser(
        "compare",
        help="compare a run against a baseline: exit 0 pass (or no baseline yet), 1 regression, 2 bad input",
    )
    p.add_argument("baseline", help="baseline iterate-report.json (or its folder)")
    p.add_argument("current", help="current iterate-report.json (or its folder)")
    p.add_argument(
        "--fail-on",
        dest="fail_on",
        action="append",
        type=_rule,
        default=None,
        help='gate rule, repeatable: "p95:10%%", "mean:5%%", "error_rate:+0.5"',
    )
    p.add_argument(
        "--alpha",
        type=_arg(lambda text: to_float(text, above=0, maximum=0.5)),
        default=DEFAULT_ALPHA,
        help=f"significance level (default {DEFAULT_ALPHA:g})",
    )
    p.add_argument(
        "--min-delta",
        type=_non_negative_float,
        default=DEFAULT_MIN_DELTA_S,
        help=f"noise floor: a latency change smaller than this many seconds is never a regression "
        f"(default {DEFAULT_MIN_DELTA_S:g})",
    )


def _add_serve_mock(sub: Any) -> None:
    before = set(sub.choices)
    mock_cli.add_parser(sub)
    added = set(sub.choices) - before
    for name in added:
        sub.choices[name].set_defaults(_mock_run=mock_cli.run)


def _add_serve_loopback(sub: Any) -> None:
    p = sub.add_parser(
        "serve-loopback",
        help="serve a neutral endpoint answering every request after a fixed latency",
        description="Serve a neutral OpenAI-shaped endpoint on 127.0.0.1 that answers every chat or "
        "completions request after a fixed latency (streamed when asked), to measure load tools "
        "themselves. Prints the base URL first; runs until Ctrl-C or SIGTERM.",
    )
    p.add_argument(
        "--latency", type=_non_negative_float, default=0.05, help="seconds before each answer (default 0.05)"
    )
    p.add_argument("--port", type=_non_negative_int, default=0, help="port (default 0: any free port)")
    p.set_defaults(_serve_loopback=True)


async def _serve_loopback(args: argparse.Namespace) -> int:
    raise_open_files_limit()  # one file per client connection: a load tool opens thousands
    async with LoopbackServer(latency_s=args.latency, port=args.port) as server:
        print(server.base_url, flush=True)
        await until_stopped()
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="iterate-bench", description=__doc__.split("\n\n")[0] if __doc__ else ""
    )
    parser.add_argument(
        "--version", action="version", version=f"iterate-bench (pytest-iterate) {__version__}"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    _add_run(sub)
    _add_compare(sub)
    _add_serve_mock(sub)
    _add_serve_loopback(sub)
    service_cli.add_parser(sub)
    return parser


def _shapes(args: argparse.Namespace) -> list[LoadShape]:
    shapes: list[LoadShape] = [ClosedLoop(c) for c in args.concurrency or []]
    shapes += [ConstantRate(r) for r in args.rate or []]
    shapes += [Poisson(r, seed=args.seed) for r in args.poisson or []]
    return shapes or [ClosedLoop(1)]


def _workload(args: argparse.Namespace) -> Workload:
    """The workload the flags name (or the default), with --max-tokens and --stream applied."""
    return choose_workload(
        path=args.workload,
        synthetic=args.synthetic,
        api=args.api,
        raw=args.raw,
        max_tokens=args.max_tokens,
        stream=args.stream,
    )


def _config_overrides(
    args: argparse.Namespace, shapes: Sequence[LoadShape]
) -> tuple[dict[str, Any], ClientLimits]:
    """Client settings from the flags: model, key variable, cache, and limits that follow the load."""
    overrides: dict[str, Any] = {"cache_enabled": bool(args.cache)}
    if args.model:
        overrides["model"] = args.model
    if args.api_key_env:
        overrides["api_key_env"] = args.api_key_env
        overrides["api_key_required"] = True
    if args.cache:
        base = IterateConfig.load()
        if args.cache_dir:
            overrides["cache_dir"] = args.cache_dir
        elif base.cache_dir == _DEFAULT_CACHE_DIR:  # not set by ITERATE_CACHE_DIR or pyproject
            overrides["cache_dir"] = str(user_cache_dir() / "responses")
    base = IterateConfig.load(overrides)
    limits = client_limits(
        shapes,
        request_timeout_s=base.request_timeout_s,
        max_attempts=1 if args.raw else base.max_attempts,
        backoff_max_s=0.0 if args.raw else base.backoff_max_s,
        open_files=raise_open_files_limit(),
    )
    overrides["max_concurrent_requests"] = limits.max_concurrent_requests
    overrides["max_connections"] = limits.max_connections
    return overrides, limits


_DEFAULT_CACHE_DIR = IterateConfig().cache_dir  # relative: it would land in the current directory


def _print_step(
    summary: ScenarioSummary, max_connections: int | None, *, open_loop: bool, stream: bool = False
) -> None:
    tokens = ""
    if stream and summary.ttft_s.count:
        tokens = f", TTFT p50 {seconds(summary.ttft_s.p50)} p99 {seconds(summary.ttft_s.p99)}"
        if summary.itl_s.count:
            tokens += f", ITL p50 {seconds(summary.itl_s.p50)}"
    print(scenario_line(summary) + tokens, flush=True)
    for share in summary.workers:
        print(
            f"  worker {share.worker}: {share.requests} requests, {share.errors} errors, "
            f"lag p50 {seconds(share.scheduling_lag_s.p50)} p99 {seconds(share.scheduling_lag_s.p99)}"
            + ("" if share.max_inflight is None else f", in flight max {share.max_inflight}"),
            flush=True,
        )
    # a closed loop of N workers has N in flight by design; an open loop that fills the
    # pool (of one process: each worker has its own) was held back by it (the pool was
    # capped by the open-files limit)
    peaks = [w.max_inflight for w in summary.workers] if summary.workers else [summary.max_inflight]
    peak = max((p for p in peaks if p is not None), default=None)
    if open_loop and max_connections and peak is not None and peak >= max_connections:
        print(
            f"  note: {peak} requests in flight reached the connection pool "
            f"(max_connections={max_connections}{' per worker' if summary.workers else ''}); "
            "more would have waited for a connection",
            flush=True,
        )


@dataclass
class _Measured:
    """What a run measured, for the reports; ``failure`` says why it stopped early."""

    run_info: dict[str, Any] = field(default_factory=dict)
    criteria: list[CriterionResult] = field(default_factory=list)
    scenarios: list[ScenarioSummary] = field(default_factory=list)
    samples: dict[str, list[RequestSample]] = field(default_factory=dict)
    failure: str = ""


def _objectives(args: argparse.Namespace) -> dict[str, float] | None:
    return {"latency_s": args.slo["p95"]} if args.slo and "p95" in args.slo else None


async def _run(args: argparse.Namespace) -> int:
    shapes = [ConstantRate(args.max_rate)] if args.saturate else _shapes(args)
    workload = _workload(args)
    if args.workers > 1:
        for shape in shapes:  # every step can be shared before any process starts (ValueError)
            plan_step(
                shape,
                args.workers,
                requests=args.requests,
                duration_s=args.duration,
                warmup=args.warmup,
                items=len(workload),
            )
        overrides, limits = _config_overrides(args, [per_worker_shape(s, args.workers) for s in shapes])
    else:
        overrides, limits = _config_overrides(args, shapes)
    if limits.capped_by:
        print(f"note: {limits.capped_by}", flush=True)
    options = SendOptions(raw=args.raw, stream=args.stream, headers=dict(args.headers or []))
    spec = EndpointSpec(args.target, profile=args.profile or "v1", loopback_latency_s=args.mock_latency)
    if args.workers > 1:
        measured = await _run_on_workers(args, spec, shapes, workload, overrides, options)
    else:
        measured = await _run_here(args, spec, shapes, workload, overrides, options)
    if limits.capped_by:
        measured.run_info["limits_note"] = limits.capped_by
    report = Report.build(measured.run_info, measured.criteria, measured.scenarios)
    if measured.failure:
        report = report.replace(complete=False, incomplete_reason=measured.failure)
    paths = write_reports(
        report,
        Path(args.report_dir),
        formats=args.formats or ("json", "md", "html", "benchmark", "prom"),
        samples=measured.samples,
    )
    if args.pushgateway:
        prom_report.push(report, args.pushgateway)
    print("reports: " + ", ".join(str(p) for p in paths))
    if measured.failure:
        print(f"iterate-bench run: {measured.failure} (the report is marked incomplete)", file=sys.stderr)
        return 1
    empty = [sc.name for sc in measured.scenarios if sc.all_failed()]
    if empty:
        print(
            f"iterate-bench run: nothing measured: every request failed in {', '.join(empty)} "
            f"(see errors_by_kind in the report); is {args.target} the right target?",
            file=sys.stderr,
        )
        return 1
    return 0


async def _run_here(
    args: argparse.Namespace,
    spec: EndpointSpec,
    shapes: Sequence[LoadShape],
    workload: Workload,
    overrides: dict[str, Any],
    options: SendOptions,
) -> _Measured:
    """Every step in this process."""
    measured = _Measured()
    async with open_target(spec, workload, config_overrides=overrides, options=options) as target:
        pool = target.info.get("max_connections")
        max_connections = pool if isinstance(pool, int) else None
        if args.saturate:
            target.gauge.reset()

            def step(summary: ScenarioSummary) -> ScenarioSummary:
                summary = summary.replace(max_inflight=target.gauge.reset())
                _print_step(summary, max_connections, open_loop=True, stream=args.stream)
                return summary

            sweep = await saturate(
                target.send,
                target.items,
                args.slo,
                start_rps=None,
                max_rps=args.max_rate,
                requests_per_step=args.requests,
                duration_s=args.duration if args.duration is not None else 5.0,
                warmup=args.warmup,
                on_step=step,
            )
            measured.scenarios = sweep.scenarios
            bound = ", ".join(f"{k}<={v:g}" for k, v in args.slo.items())
            measured.criteria.append(
                CriterionResult(
                    id="saturation.max_rps",
                    threshold=bound,
                    unit="req/s",
                    observed=sweep.best_rps,
                    passed=sweep.best_rps is not None,
                    note=f"rates doubled from {sweep.start_rps:g} req/s (one worker's rate), "
                    f"then bisected; each step >= {min_step_requests(args.slo)} requests"
                    if args.requests is None
                    else f"rates doubled from {sweep.start_rps:g} req/s, then bisected; "
                    f"{args.requests} requests per step",
                )
            )
            print(
                f"highest rate meeting {bound}: "
                f"{sweep.best_rps if sweep.best_rps is not None else 'none'} req/s"
            )
        else:
            for shape in shapes:
                progress = (
                    None if args.quiet else Progress(shape.label, args.requests, inflight=_current(target))
                )
                target.gauge.reset()
                result = await run_load(
                    target.send,
                    target.items,
                    shape,
                    requests=args.requests,
                    duration_s=args.duration,
                    warmup=args.warmup,
                    progress=progress,
                )
                summary = result.summary(objectives=_objectives(args)).replace(
                    max_inflight=target.gauge.peak,
                    concurrency=shape.concurrency if isinstance(shape, ClosedLoop) else None,
                )
                measured.scenarios.append(summary)
                measured.samples[summary.name] = result.samples
                _print_step(
                    summary, max_connections, open_loop=not isinstance(shape, ClosedLoop), stream=args.stream
                )
        measured.run_info = {"tool": "iterate-bench", "version": __version__, **target.info, "workers": 1}
    return measured


async def _run_on_workers(
    args: argparse.Namespace,
    spec: EndpointSpec,
    shapes: Sequence[LoadShape],
    workload: Workload,
    overrides: dict[str, Any],
    options: SendOptions,
) -> _Measured:
    """Every step on ``--workers`` processes; this one serves a mock or loopback target
    meanwhile (a URL is only pointed at). A worker that dies ends the run: the steps done
    so far are reported, marked incomplete."""
    measured = _Measured()
    async with open_endpoint(spec) as endpoint:
        setup = WorkerSetup(endpoint.base_url, workload, overrides, options)
        async with WorkerPool(setup, args.workers) as pool:
            served = "" if spec.external else f"; {endpoint.label} served by this process"
            pids = ", ".join(str(pid) for pid in pool.pids)
            print(f"workers: {args.workers} processes (pid {pids}){served}", flush=True)
            size = pool.info.get("max_connections")
            max_connections = size if isinstance(size, int) else None
            for shape in shapes:
                try:
                    result, shares = await pool.run(
                        shape, requests=args.requests, duration_s=args.duration, warmup=args.warmup
                    )
                except WorkerError as exc:
                    measured.failure = str(exc)
                    break
                summary = result.summary(objectives=_objectives(args)).replace(
                    max_inflight=sum(w.max_inflight or 0 for w in shares),
                    concurrency=shape.concurrency if isinstance(shape, ClosedLoop) else None,
                    workers=tuple(shares),
                )
                measured.scenarios.append(summary)
                measured.samples[summary.name] = result.samples
                _print_step(
                    summary, max_connections, open_loop=not isinstance(shape, ClosedLoop), stream=args.stream
                )
            measured.run_info = {
                "tool": "iterate-bench",
                "version": __version__,
                **pool.info,
                "target": endpoint.label,
                "base_url": redact_url(endpoint.base_url),
                "workers": args.workers,
            }
    return measured


def _current(target: Target) -> Callable[[], int]:
    gauge = target.gauge
    return lambda: gauge.current


def _compare(args: argparse.Namespace) -> int:
    """0: no regression (or no baseline yet: the first run); 1: a regression; 2: bad input."""
    try:
        baseline = load_baseline(args.baseline)
    except BaselineMissing as exc:
        print(str(exc))
        return 0
    except (OSError, ValueError) as exc:  # not a report, incomplete, unreadable
        print(f"iterate-bench compare: the baseline {args.baseline}: {exc}", file=sys.stderr)
        return 2
    try:
        current = json_report.load(args.current)
        result = compare(
            baseline,
            current,
            args.fail_on or ["p95:10%", "error_rate:+0.5"],
            alpha=args.alpha,
            min_delta_s=args.min_delta,
        )
    except (OSError, ValueError) as exc:
        print(f"iterate-bench compare: the current report {args.current}: {exc}", file=sys.stderr)
        return 2
    print(result.table())
    return 0 if result.passed else 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "run":
        if args.saturate and not args.slo:
            parser.error("--saturate needs an objective, e.g. --slo p95=2.0")
        if args.workers > 1 and args.saturate:
            parser.error(
                f"--workers {args.workers}: --saturate runs in one process; "
                "give the rates to try with --rate instead"
            )
        if args.workers > 1 and args.target == "inprocess":
            parser.error(
                f"--workers {args.workers}: the in-process mock lives inside one process; "
                "use --target mock, loopback or a URL"
            )
        try:
            return asyncio.run(_run(args))
        except KeyboardInterrupt:
            return 130
        except WorkerError as exc:
            print(f"iterate-bench run: {exc}", file=sys.stderr)
            return 1
        except (ValueError, OSError) as exc:  # ConfigError, WorkloadError, LimitError: they name the value
            print(f"iterate-bench run: {exc}", file=sys.stderr)
            return 2
    if args.command == "compare":
        return _compare(args)
    if getattr(args, "_serve_loopback", False):
        try:
            return asyncio.run(_serve_loopback(args))
        except KeyboardInterrupt:
            return 0
        except OSError as exc:
            print(f"serve-loopback: cannot listen on 127.0.0.1:{args.port}: {exc}", file=sys.stderr)
            return 1
    if hasattr(args, "_mock_run"):
        return int(args._mock_run(args) or 0)
    if hasattr(args, "func"):
        return int(args.func(args) or 0)
    parser.error(f"unknown command {args.command!r}")
    return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

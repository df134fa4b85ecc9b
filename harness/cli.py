"""``iterate-bench``: run load against an endpoint, compare runs, serve the mock.

    iterate-bench run --concurrency 1,5,10 --requests 100 --report-dir reports
    iterate-bench run --rate 5 --duration 30 --target http://127.0.0.1:8080/v1
    iterate-bench run --saturate --slo p95=2.0
    iterate-bench compare reports/baseline.json reports/iterate-report.json --fail-on p95:10%
    iterate-bench serve-mock --profile v1
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
from pathlib import Path
from typing import Any, TypeVar

from pytest_iterate.client.values import to_float, to_float_list, to_int, to_int_list
from pytest_iterate.doubles.mock import cli as mock_cli
from pytest_iterate.endpoint import EndpointSpec
from pytest_iterate.harness.compare import (
    DEFAULT_ALPHA,
    DEFAULT_MIN_DELTA_S,
    BaselineMissing,
    compare,
    load_baseline,
    parse_rule,
)
from pytest_iterate.harness.fmt import seconds
from pytest_iterate.harness.loads import ClosedLoop, ConstantRate, Poisson
from pytest_iterate.harness.progress import Progress
from pytest_iterate.harness.reports import ALL_FORMATS, json_report, prom_report, write_reports
from pytest_iterate.harness.runner import parse_slo, run_load, saturate
from pytest_iterate.harness.samples import RequestSample
from pytest_iterate.harness.summary import CriterionResult, Report, ScenarioSummary
from pytest_iterate.harness.targets import open_target
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


def _add_run(sub: Any) -> None:
    p = sub.add_parser("run", help="run load against an endpoint and write reports")
    p.add_argument(
        "--target",
        default="mock",
        help="mock (the project's loopback mock server, default), inprocess (the mock behind a respx "
        "router), loopback (the harness's fixed-latency server) or an http(s):// base URL",
    )
    p.add_argument("--workload", default=None, help="workload JSONL (default: the standard workload)")
    p.add_argument("--concurrency", type=_int_list, default=None, help="closed-loop sweep, e.g. 1,5,10")
    p.add_argument("--rate", type=_float_list, default=None, help="constant-rate open loop, requests/s")
    p.add_argument("--poisson", type=_float_list, default=None, help="poisson open loop, mean requests/s")
    p.add_argument("--seed", type=int, default=0, help="seed of the poisson arrivals")
    p.add_argument("--requests", type=_positive_int, default=None, help="requests per scenario")
    p.add_argument("--duration", type=_positive_float, default=None, help="seconds per scenario")
    p.add_argument("--warmup", type=_non_negative_int, default=0, help="requests sent first, not measured")
    p.add_argument("--saturate", action="store_true", help="find the highest rate meeting --slo")
    p.add_argument("--slo", type=_slo, default=None, help="latency objective, e.g. p95=2.0 (seconds)")
    p.add_argument("--max-rate", type=_positive_float, default=10_000.0, help="upper bound of --saturate")
    p.add_argument("--profile", default=None, help="latency profile of the project mock, e.g. v1")
    p.add_argument(
        "--mock-latency",
        type=_non_negative_float,
        default=0.05,
        help="fixed latency (s) of the harness loopback server",
    )
    p.add_argument("--raw", action="store_true", help="bare HTTP POSTs instead of the pipeline")
    p.add_argument("--no-cache", action="store_true", help="disable the pipeline's response cache")
    p.add_argument("--report-dir", default="reports", help="output folder (default: reports)")
    p.add_argument("--formats", type=_formats, default=None, help="json,md,html,benchmark,prom (default all)")
    p.add_argument("--pushgateway", default=None, help="push metrics.prom's gauges to this Pushgateway")
    p.add_argument("--quiet", action="store_true", help="no progress line")


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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="iterate-bench", description=__doc__.split("\n\n")[0] if __doc__ else ""
    )
    sub = parser.add_subparsers(dest="command", required=True)
    _add_run(sub)
    _add_compare(sub)
    _add_serve_mock(sub)
    service_cli.add_parser(sub)
    return parser


def _shapes(args: argparse.Namespace) -> list[Any]:
    shapes: list[Any] = [ClosedLoop(c) for c in args.concurrency or []]
    shapes += [ConstantRate(r) for r in args.rate or []]
    shapes += [Poisson(r, seed=args.seed) for r in args.poisson or []]
    return shapes or [ClosedLoop(1)]


async def _run(args: argparse.Namespace) -> int:
    overrides: dict[str, Any] = {}
    if args.no_cache:
        overrides["cache_enabled"] = False
    scenarios: list[ScenarioSummary] = []
    criteria: list[CriterionResult] = []
    samples: dict[str, list[RequestSample]] = {}
    spec = EndpointSpec(args.target, profile=args.profile or "v1", loopback_latency_s=args.mock_latency)
    async with open_target(spec, workload=args.workload, config_overrides=overrides, raw=args.raw) as target:
        if args.saturate:
            sweep = await saturate(
                target.send,
                target.items,
                args.slo,
                max_rps=args.max_rate,
                requests_per_step=args.requests,
                duration_s=args.duration if args.duration or args.requests else 5.0,
            )
            scenarios = sweep.scenarios
            bound = ", ".join(f"{k}<={v:g}" for k, v in args.slo.items())
            criteria.append(
                CriterionResult(
                    id="saturation.max_rps",
                    threshold=bound,
                    unit="req/s",
                    observed=sweep.best_rps,
                    passed=sweep.best_rps is not None,
                )
            )
            print(
                f"highest rate meeting {bound}: "
                f"{sweep.best_rps if sweep.best_rps is not None else 'none'} req/s"
            )
        else:
            for shape in _shapes(args):
                progress = None if args.quiet else Progress(shape.label, args.requests)
                result = await run_load(
                    target.send,
                    target.items,
                    shape,
                    requests=args.requests,
                    duration_s=args.duration,
                    warmup=args.warmup,
                    progress=progress,
                )
                summary = result.summary(
                    objectives={"latency_s": args.slo["p95"]} if args.slo and "p95" in args.slo else None
                )
                scenarios.append(summary)
                samples[summary.name] = result.samples
                lat = summary.latency_s
                kinds = summary.error_kinds_text()
                print(
                    f"{summary.name}: {summary.requests} requests, {summary.errors} errors"
                    f"{f' ({kinds})' if kinds else ''}, {(summary.throughput_rps or 0):.1f} req/s, "
                    f"mean {seconds(lat.mean)}, p95 {seconds(lat.p95)}, p99 {seconds(lat.p99)}, lag p99 "
                    f"{seconds(summary.scheduling_lag_s.p99)}"
                )
        run_info = {"tool": "iterate-bench", **target.info}
    report = Report.build(run_info, criteria, scenarios)
    paths = write_reports(
        report,
        Path(args.report_dir),
        formats=args.formats or ("json", "md", "html", "benchmark", "prom"),
        samples=samples,
    )
    if args.pushgateway:
        prom_report.push(report, args.pushgateway)
    print("reports: " + ", ".join(str(p) for p in paths))
    empty = [sc.name for sc in scenarios if sc.all_failed()]
    if empty:
        print(
            f"iterate-bench run: nothing measured: every request failed in {', '.join(empty)} "
            f"(see errors_by_kind in the report); is {args.target} the right target?",
            file=sys.stderr,
        )
        return 1
    return 0


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
        try:
            return asyncio.run(_run(args))
        except KeyboardInterrupt:
            return 130
        except (ValueError, OSError) as exc:
            print(f"iterate-bench run: {exc}", file=sys.stderr)
            return 2
    if args.command == "compare":
        return _compare(args)
    if hasattr(args, "_mock_run"):
        return int(args._mock_run(args) or 0)
    if hasattr(args, "func"):
        return int(args.func(args) or 0)
    parser.error(f"unknown command {args.command!r}")
    return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

"""``iterate-bench serve-mock``: serve the mock endpoint until Ctrl-C or SIGTERM.

    iterate-bench serve-mock --profile v1 --port 8000 --seed 1 --fault 429=0.02 --fault 503=0.01
    iterate-bench serve-mock --profile fast --fault 503x3=0.05   # 5 % of calls exhaust 3 attempts
    python -m pytest_iterate.doubles.mock.cli --profile fast --fault 5:hang --rpm 600 --tpm 200000

The first line printed is the base URL (``http://127.0.0.1:8000/v1``), flushed, so a
script can read it and start its client; ``/metrics`` lives on the same port.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from pytest_iterate._serving import command_parsers, serve_command
from pytest_iterate.doubles.mock.core import MockLLM
from pytest_iterate.doubles.mock.faults import FaultPlan
from pytest_iterate.doubles.mock.ratelimit import RateLimiter
from pytest_iterate.doubles.mock.server import MockServer

__all__ = ["add_parser", "build_parser", "main", "run"]


def _configure(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument(
        "--profile",
        default="v1",
        help="latency profile: v1, fast, degraded, zero or a JSON file (default v1)",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port (0: any free port; default 8000)")
    p.add_argument("--seed", type=int, default=0, help="seed of latencies, faults and answers (default 0)")
    p.add_argument(
        "--fault",
        action="append",
        default=[],
        metavar="KIND=RATE|N:KIND|KINDxK=SHARE",
        help="inject a fault: 429=0.02 (rate), 5:hang (the 5th request) or 503x3=0.02 (2%% of "
        "logical requests, by X-Client-Request-Id, fail their first 3 attempts); repeatable",
    )
    p.add_argument("--retry-after", type=float, default=1.0, help="seconds a 429 asks to wait (default 1)")
    p.add_argument("--hang", type=float, default=3600.0, help="seconds a hang lasts (default 3600)")
    p.add_argument("--rpm", type=float, default=None, help="rate limit: requests per minute (default none)")
    p.add_argument("--tpm", type=float, default=None, help="rate limit: tokens per minute (default none)")
    return p


def _core(args: argparse.Namespace) -> Any:

    plan = FaultPlan.parse(args.fault, retry_after_s=args.retry_after, hang_s=args.hang)
    limiter = RateLimiter(args.rpm, args.tpm) if (args.rpm or args.tpm) else None
    return MockLLM(args.profile, seed=args.seed, faults=plan, rate_limit=limiter)


def run(args: argparse.Namespace) -> int:
    """Serve until stopped; bad options print one line and return 2."""
    return serve_command(
        "serve-mock",
        lambda: MockServer(_core(args), host=args.host, port=args.port),
        f"{args.host}:{args.port}",
    )


add_parser, build_parser = command_parsers(
    "serve-mock",
    "pytest_iterate.doubles.mock.cli",
    "serve the simulated OpenAI-compatible endpoint",
    __doc__,
    _configure,
    run,
)


def main(argv: list[str] | None = None) -> int:
    return run(build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())

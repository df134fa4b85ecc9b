"""The comparison's error rates, measured: false alarms on identical runs, power on slow ones.

Latencies are drawn (seeded) from a mock latency profile the way the mock answers a
non-streamed request: ``ttft + (output_tokens - 1) * itl``. A *pair* is a baseline run
and a current run of the same ``n`` requests (a workload: each request's answer length is
drawn once and kept, as the same prompt gets the same answer), each run drawing its own
time to first token and per-token time for every request; the current run's latencies
are multiplied by ``slowdown``. ``paired=False`` draws two unrelated workloads instead
(and drops the request keys), which is what a comparison of two different workloads sees.
:func:`flag_rate` applies one rule to ``pairs`` such pairs and returns the share flagged
as a regression: with ``slowdown=1`` that is the false-alarm rate, above 1
the power. ``python -m pytest_iterate.harness.gate_rates`` prints the table that
DEFINITIONS.md quotes.
"""

from __future__ import annotations

import argparse
import random
import sys
from collections.abc import Sequence
from dataclasses import dataclass

from pytest_iterate.doubles.mock.profiles import LatencyProfile, load_profile
from pytest_iterate.harness.compare import DEFAULT_ALPHA, DEFAULT_MIN_DELTA_S, compare, parse_rule
from pytest_iterate.harness.samples import RequestSample
from pytest_iterate.harness.stats import summarize
from pytest_iterate.harness.summary import Report

__all__ = ["GateRate", "draw", "flag_rate", "main", "workload"]


def workload(profile: LatencyProfile, n: int, rng: random.Random) -> list[int]:
    """The answer lengths (output tokens) of ``n`` requests."""
    return [max(1, round(profile.output_tokens.sample(rng))) for _ in range(n)]


def draw(
    profile: LatencyProfile, tokens: Sequence[int], rng: random.Random, slowdown: float = 1.0
) -> list[float]:
    """One run's latencies for requests of these answer lengths, times ``slowdown``."""
    return [(profile.ttft_base.sample(rng) + (n - 1) * profile.itl.sample(rng)) * slowdown for n in tokens]


def _report(latencies: Sequence[float], keyed: bool) -> Report:
    samples = [
        RequestSample(scheduled_s=float(i), start_s=float(i), end_s=i + v, key=f"r{i}" if keyed else None)
        for i, v in enumerate(latencies)
    ]
    return Report.build({}, [], [summarize("run", samples, float(len(latencies)))])


@dataclass(frozen=True, slots=True)
class GateRate:
    profile: str
    rule: str
    n: int
    slowdown: float
    pairs: int
    flagged: int
    paired: bool = True

    @property
    def rate(self) -> float:
        return self.flagged / self.pairs


def flag_rate(
    profile: str | LatencyProfile,
    rule: str,
    *,
    n: int = 40,
    pairs: int = 200,
    slowdown: float = 1.0,
    seed: int = 0,
    alpha: float = DEFAULT_ALPHA,
    min_delta_s: float = DEFAULT_MIN_DELTA_S,
    paired: bool = True,
) -> GateRate:
    """How many of ``pairs`` seeded baseline/current pairs ``rule`` flags as a regression."""
    prof = profile if isinstance(profile, LatencyProfile) else load_profile(profile)
    parsed = parse_rule(rule)
    flagged = 0
    for i in range(pairs):
        rng = random.Random(f"{seed}:{prof.name}:{i}")
        tokens = workload(prof, n, rng)
        base = _report(draw(prof, tokens, rng), paired)
        cur = _report(draw(prof, tokens if paired else workload(prof, n, rng), rng, slowdown), paired)
        result = compare(base, cur, [parsed], alpha=alpha, min_delta_s=min_delta_s, seed=i)
        flagged += not result.passed
    return GateRate(prof.name, rule, n, slowdown, pairs, flagged, paired)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pytest_iterate.harness.gate_rates", description=__doc__)
    parser.add_argument(
        "--profiles", default="v1,degraded", help="mock latency profiles (default v1,degraded)"
    )
    parser.add_argument("--rules", default="mean:10%,p95:10%", help="rules (default mean:10%%,p95:10%%)")
    parser.add_argument("--n", type=int, default=40, help="requests per run (default 40)")
    parser.add_argument("--pairs", type=int, default=400, help="pairs per cell (default 400)")
    parser.add_argument("--slowdowns", default="1.0,1.3,1.5", help="slowdown factors (default 1.0,1.3,1.5)")
    args = parser.parse_args(argv)
    slowdowns = [float(s) for s in args.slowdowns.split(",")]
    print("| profile | rule | runs | n a side | " + " | ".join(f"x{s:g}" for s in slowdowns) + " |")
    print("|---|---|---|---:|" + "---:|" * len(slowdowns))
    for profile in args.profiles.split(","):
        for rule in args.rules.split(","):
            for paired in (True, False):
                cells = [
                    flag_rate(profile, rule, n=args.n, pairs=args.pairs, slowdown=s, paired=paired)
                    for s in slowdowns
                ]
                shown = " | ".join(f"{c.rate:.1%} ({c.flagged}/{c.pairs})" for c in cells)
                kind = "same requests" if paired else "different requests"
                print(f"| {profile} | {rule} | {kind} | {args.n} | {shown} |", flush=True)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

"""Is the current run slower than the baseline, beyond noise? One-sided tests over raw samples.

Each function answers for one kind of statistic and returns a p-value: the chance of a
difference at least this bad when both runs come from the same distribution.

* :func:`rank_p` — Mann-Whitney U over the whole distribution (a shift of the bulk).
* :func:`log_t_p` — Welch's t-test on the logarithms, with Student's t distribution: a
  uniform slowdown is a shift of the log-latencies, and on lognormal-like latencies this
  is the most powerful of the usual tests (logarithms also tame the long tail that makes a
  t-test on raw latencies unreliable).
* :func:`shift_p` — the comparison's shift test: both of the above must agree (the larger
  of their p-values). The rank test shrugs off outliers, the log-t test sees scale shifts
  best; requiring both keeps the false-alarm rate under each one's own (measured in
  DEFINITIONS.md: the log-t test alone raised 1.2 % false alarms at alpha 0.01 on the v1
  profile, the pair 0.9 %).
* :func:`paired_log_ratios` / :func:`paired_p` — when both runs sent the same requests
  (the same workload, keyed by design id), each request is compared with itself: the
  differences between requests (a long answer against a short one) cancel, and only the
  run-to-run change is left. ``paired_p`` asks a Wilcoxon signed-rank test and a paired
  t-test on the log-ratios, both of which must agree.
* :func:`quantile_p` — a permutation test of one quantile's difference (a tail that grew
  while the bulk did not). Under "same distribution" the labels are exchangeable, so the
  p-value is valid at any sample size (no normal approximation, no bootstrap bias).
* :func:`proportion_p` — a two-proportion z-test (the error rate).
* :func:`ratio_estimate` — the Hodges-Lehmann estimate of how many times slower the
  current run is (median of all pairwise ratios): under a uniform slowdown every
  quantile moves by this factor, and it is far less noisy than the ratio of two p95s.

All are deterministic (seeded), work on at most ``cap`` samples a side (evenly strided,
keeping the time order's spread) and need no third-party package.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

from pytest_iterate.harness.stats import mann_whitney_u
from pytest_iterate.harness.summary import percentile

__all__ = [
    "log_t_p",
    "paired_log_ratios",
    "paired_p",
    "proportion_p",
    "quantile_p",
    "rank_p",
    "ratio_estimate",
    "shift_p",
    "signed_rank_p",
    "stride",
    "student_t_sf",
]


def stride(values: Sequence[float], cap: int) -> list[float]:
    """At most ``cap`` of ``values``, evenly strided."""
    if len(values) <= cap:
        return [float(v) for v in values]
    step = len(values) / cap
    return [float(values[int(i * step)]) for i in range(cap)]


def rank_p(base: Sequence[float], current: Sequence[float]) -> float:
    """One-sided Mann-Whitney p-value that ``current`` is stochastically larger than ``base``."""
    if len(base) < 2 or len(current) < 2:
        return 1.0
    u_base, p_two = mann_whitney_u(base, current)
    larger = u_base < len(base) * len(current) / 2.0  # base's ranks below the middle
    return p_two / 2.0 if larger else 1.0 - p_two / 2.0


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz)."""
    tiny = 1e-300
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 300):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c if abs(1.0 + aa / c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c if abs(1.0 + aa / c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < 3e-14:
            break
    return h


def _betainc(a: float, b: float, x: float) -> float:
    """The regularized incomplete beta function I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    front = math.exp(
        math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    )
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def student_t_sf(t: float, df: float) -> float:
    """P(T > t) for Student's t with ``df`` degrees of freedom."""
    tail = 0.5 * _betainc(df / 2.0, 0.5, df / (df + t * t))
    return tail if t > 0 else 1.0 - tail


def log_t_p(base: Sequence[float], current: Sequence[float]) -> float:
    """One-sided Welch t-test p-value that the log-latencies of ``current`` are higher."""
    a = [math.log(v) for v in base if v > 0]
    b = [math.log(v) for v in current if v > 0]
    if len(a) < 2 or len(b) < 2:
        return 1.0
    ma, mb = math.fsum(a) / len(a), math.fsum(b) / len(b)
    va = math.fsum((x - ma) ** 2 for x in a) / (len(a) - 1) / len(a)
    vb = math.fsum((x - mb) ** 2 for x in b) / (len(b) - 1) / len(b)
    if va + vb <= 0:
        return 0.0 if mb > ma else 1.0
    df = (va + vb) ** 2 / ((va**2 / (len(a) - 1) if va else 0.0) + (vb**2 / (len(b) - 1) if vb else 0.0))
    return student_t_sf((mb - ma) / math.sqrt(va + vb), df)


def shift_p(base: Sequence[float], current: Sequence[float]) -> float:
    """One-sided p-value of "the current run is slower as a whole": the larger of the rank
    test's and the log-t test's p-values (both must say so)."""
    return max(rank_p(base, current), log_t_p(base, current))


def paired_log_ratios(
    base: Sequence[float], base_keys: Sequence[str], current: Sequence[float], current_keys: Sequence[str]
) -> list[float]:
    """log(current / base) for every request both runs sent, matched by key and by
    occurrence (the second "design-7" of one run with the second of the other)."""
    seen: dict[str, int] = {}
    index: dict[tuple[str, int], float] = {}
    for key, value in zip(base_keys, base, strict=True):
        n = seen.get(key, 0)
        seen[key] = n + 1
        index[(key, n)] = value
    seen.clear()
    out = []
    for key, value in zip(current_keys, current, strict=True):
        n = seen.get(key, 0)
        seen[key] = n + 1
        before = index.get((key, n))
        if before is not None and before > 0 and value > 0:
            out.append(math.log(value / before))
    return out


def signed_rank_p(diffs: Sequence[float]) -> float:
    """One-sided Wilcoxon signed-rank p-value that ``diffs`` lean positive (normal
    approximation, zeros dropped, ties averaged and corrected, continuity-corrected)."""
    nonzero = [d for d in diffs if d != 0.0]
    n = len(nonzero)
    if n < 2:
        return 1.0
    ordered = sorted(nonzero, key=abs)
    w_plus = 0.0
    tie_term = 0.0
    i = 0
    while i < n:
        j = i
        while j + 1 < n and abs(ordered[j + 1]) == abs(ordered[i]):
            j += 1
        rank = (i + j) / 2.0 + 1.0
        w_plus += rank * sum(1 for k in range(i, j + 1) if ordered[k] > 0)
        t = j - i + 1
        tie_term += t**3 - t
        i = j + 1
    mean = n * (n + 1) / 4.0
    var = n * (n + 1) * (2 * n + 1) / 24.0 - tie_term / 48.0
    if var <= 0:
        return 1.0
    z = (w_plus - mean - 0.5) / math.sqrt(var)
    return 0.5 * math.erfc(z / math.sqrt(2))


def _paired_t_p(diffs: Sequence[float]) -> float:
    n = len(diffs)
    if n < 2:
        return 1.0
    mean = math.fsum(diffs) / n
    var = math.fsum((d - mean) ** 2 for d in diffs) / (n - 1)
    if var <= 0:
        return 0.0 if mean > 0 else 1.0
    return student_t_sf(mean / math.sqrt(var / n), n - 1)


def paired_p(diffs: Sequence[float]) -> float:
    """One-sided p-value that the paired log-ratios ``diffs`` are positive (the current run is
    slower request by request): the larger of the signed-rank and the paired t-test p-values."""
    return max(signed_rank_p(diffs), _paired_t_p(diffs))


def quantile_p(
    base: Sequence[float],
    current: Sequence[float],
    q: float,
    *,
    permutations: int = 1000,
    seed: int = 0,
    cap: int = 500,
    enough: int = 20,
) -> float:
    """One-sided permutation p-value that quantile ``q`` (0..100) of ``current`` is higher.

    Sequential (Besag and Clifford): it stops once ``enough`` permutations were at least as
    extreme as the observed difference, with p = enough / permutations so far, so runs that
    are plainly alike cost a few dozen permutations instead of ``permutations``.
    """
    a, b = stride(base, cap), stride(current, cap)
    if len(a) < 2 or len(b) < 2:
        return 1.0
    observed = percentile(b, q) - percentile(a, q)
    pooled = a + b
    rng = random.Random(seed)
    at_least = 0
    for done in range(1, permutations + 1):
        rng.shuffle(pooled)
        if percentile(pooled[len(a) :], q) - percentile(pooled[: len(a)], q) >= observed:
            at_least += 1
            if at_least >= enough:
                return at_least / done
    return (at_least + 1) / (permutations + 1)


def proportion_p(errors_base: int, n_base: int, errors_current: int, n_current: int) -> float:
    """One-sided two-proportion z-test p-value that the current error rate is higher."""
    if n_base == 0 or n_current == 0:
        return 1.0
    pooled = (errors_base + errors_current) / (n_base + n_current)
    var = pooled * (1 - pooled) * (1 / n_base + 1 / n_current)
    if var <= 0:
        return 1.0 if errors_current / n_current <= errors_base / n_base else 0.0
    z = (errors_current / n_current - errors_base / n_base) / math.sqrt(var)
    return 0.5 * math.erfc(z / math.sqrt(2))


def ratio_estimate(base: Sequence[float], current: Sequence[float], *, cap: int = 400) -> float | None:
    """Hodges-Lehmann estimate of current / base (the median of every pairwise ratio of
    positive values); None without positive values on both sides."""
    a = [math.log(v) for v in stride(base, cap) if v > 0]
    b = [math.log(v) for v in stride(current, cap) if v > 0]
    if not a or not b:
        return None
    diffs = sorted(y - x for x in a for y in b)
    return math.exp(percentile(diffs, 50.0, presorted=True))

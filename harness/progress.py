"""Progress of a running scenario: a live line on a terminal, one line per scenario in CI.

:class:`Progress` counts samples (requests, errors, cache hits, latency) and, when
``enabled``, redraws one line with ``\\r`` at most every ``interval_s``; :meth:`close`
clears it for the scenario's summary line. Enabled only on an interactive terminal
outside CI (``CI`` set to a true value): a CI log gets no carriage returns, only the
summary line the caller prints per scenario (:func:`scenario_line`). Output goes
through a ``write`` callable, so pytest can route it past its output capture.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Mapping
from typing import TextIO

from pytest_iterate.harness.fmt import seconds
from pytest_iterate.harness.samples import RequestSample
from pytest_iterate.harness.summary import ScenarioSummary

__all__ = ["Progress", "ScenarioReporter", "in_ci", "progress_enabled", "scenario_line"]


def in_ci(environ: Mapping[str, str] | None = None) -> bool:
    """True when ``CI`` is set to a true value (GitHub Actions, GitLab CI and others set it)."""
    env = os.environ if environ is None else environ
    return env.get("CI", "").strip().lower() in ("1", "true", "yes", "on")


def progress_enabled(stream: TextIO, environ: Mapping[str, str] | None = None) -> bool:
    """True on an interactive terminal outside CI."""
    if in_ci(environ):
        return False
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


def scenario_line(summary: ScenarioSummary) -> str:
    """One line for a finished scenario: counts, rate, latency, lag, cache hits, requests in flight."""
    lat = summary.latency_s
    kinds = summary.error_kinds_text()
    inflight = "" if summary.max_inflight is None else f", in flight max {summary.max_inflight}"
    return (
        f"{summary.name}: {summary.requests} requests, {summary.errors} errors"
        f"{f' ({kinds})' if kinds else ''}, {(summary.throughput_rps or 0):.1f} req/s, "
        f"mean {seconds(lat.mean)}, p95 {seconds(lat.p95)}, p99 {seconds(lat.p99)}, "
        f"lag p99 {seconds(summary.scheduling_lag_s.p99)}, "
        f"cache hits {summary.cache.hit_rate * 100:.0f} %{inflight}"
    )


class Progress:
    """Counts samples and redraws ``label  N/total  R req/s  p50 .. ms  errors E  cache H %``."""

    def __init__(
        self,
        label: str,
        total: int | None = None,
        *,
        stream: TextIO | None = None,
        enabled: bool | None = None,
        interval_s: float = 0.1,
        clock: Callable[[], float] = time.monotonic,
        write: Callable[[str], None] | None = None,
        inflight: Callable[[], int] | None = None,
    ) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = progress_enabled(self.stream) if enabled is None else enabled
        self.label, self.total, self.interval_s, self.clock = label, total, interval_s, clock
        self._write = write or self._to_stream
        self._inflight = inflight
        self.done = 0
        self.errors = 0
        self.hits = 0
        self._recent: list[float] = []
        self._t0 = clock()
        self._last_draw = -1e9
        self._drawn = False

    def _to_stream(self, text: str) -> None:
        self.stream.write(text)
        self.stream.flush()

    def update(self, sample: RequestSample) -> None:
        self.done += 1
        self.errors += not sample.ok
        self.hits += sample.cache_tier is not None
        self._recent.append(sample.latency_s)
        if len(self._recent) > 200:
            del self._recent[:100]
        if not self.enabled:
            return
        now = self.clock()
        if now - self._last_draw >= self.interval_s:
            self._last_draw = now
            self._draw(now)

    def line(self, now: float | None = None) -> str:
        now = self.clock() if now is None else now
        elapsed = max(now - self._t0, 1e-9)
        recent = sorted(self._recent)
        p50 = seconds(recent[len(recent) // 2]) if recent else "-"
        of = f"/{self.total}" if self.total else ""
        hit = f"{100 * self.hits / self.done:.0f} %" if self.done else "-"
        flight = f"  in flight {self._inflight()}" if self._inflight is not None else ""
        return (
            f"{self.label}  {self.done}{of}  {self.done / elapsed:.1f} req/s  "
            f"p50 {p50}  errors {self.errors}  cache {hit}{flight}"
        )

    def _draw(self, now: float) -> None:
        self._drawn = True
        self._write("\r" + self.line(now).ljust(78))

    def close(self) -> None:
        """Clear the live line, for the caller's :func:`scenario_line` to take its place."""
        if self.enabled and self._drawn:
            self._write("\r" + " " * 78 + "\r")


class ScenarioReporter:
    """Progress of named scenarios for a caller that runs several (``pytest --iterate``).

    :meth:`start` returns a :class:`Progress` drawing a live line when ``live`` (a
    terminal), else nothing; :meth:`finish` writes the scenario's :func:`scenario_line`,
    so a terminal sees a live line per scenario and a CI log one line per scenario.
    ``write`` receives text exactly as it should appear (newlines included);
    ``newline`` is called first so the lines start on a fresh line.
    """

    def __init__(
        self,
        write: Callable[[str], None],
        *,
        live: bool,
        newline: Callable[[], None] | None = None,
        prefix: str = "",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._write, self.live, self._newline, self.prefix, self._clock = write, live, newline, prefix, clock
        self._started: dict[str, float] = {}

    def start(self, name: str, total: int | None = None) -> Progress | None:
        self._started[name] = self._clock()
        if not self.live:
            return None
        if self._newline is not None:
            self._newline()
        return Progress(f"{self.prefix}{name}", total, enabled=True, write=self._write, clock=self._clock)

    def finish(self, summary: ScenarioSummary) -> None:
        began = self._started.pop(summary.name, None)
        took = "" if began is None else f" [{self._clock() - began:.1f} s]"
        if self._newline is not None and not self.live:
            self._newline()
        self._write(f"{self.prefix}{scenario_line(summary)}{took}\n")

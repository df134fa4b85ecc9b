"""A live one-line progress display (rate, latency, errors) for terminals.

Quiet when the stream is not a TTY or when ``CI`` is set to a true value, so logs
in CI stay clean. Redraws at most every ``interval_s`` with a plain ``\\r`` line.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Mapping
from typing import TextIO

from pytest_iterate.harness.samples import RequestSample

__all__ = ["Progress", "progress_enabled"]


def progress_enabled(stream: TextIO, environ: Mapping[str, str] | None = None) -> bool:
    """True on an interactive terminal outside CI."""
    env = os.environ if environ is None else environ
    if env.get("CI", "").strip().lower() in ("1", "true", "yes"):
        return False
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


class Progress:
    """Counts samples and redraws ``label  N/total  R req/s  p50 .. ms  errors E``."""

    def __init__(
        self,
        label: str,
        total: int | None = None,
        *,
        stream: TextIO | None = None,
        enabled: bool | None = None,
        interval_s: float = 0.1,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = progress_enabled(self.stream) if enabled is None else enabled
        self.label, self.total, self.interval_s, self.clock = label, total, interval_s, clock
        self.done = 0
        self.errors = 0
        self._recent: list[float] = []
        self._t0 = clock()
        self._last_draw = -1e9

    def update(self, sample: RequestSample) -> None:
        self.done += 1
        self.errors += not sample.ok
        self._recent.append(sample.latency_s)
        if len(self._recent) > 200:
            del self._recent[:100]
        now = self.clock()
        if self.enabled and now - self._last_draw >= self.interval_s:
            self._last_draw = now
            self._draw(now)

    def line(self, now: float | None = None) -> str:
        now = self.clock() if now is None else now
        elapsed = max(now - self._t0, 1e-9)
        recent = sorted(self._recent)
        p50 = recent[len(recent) // 2] * 1000 if recent else 0.0
        of = f"/{self.total}" if self.total else ""
        return (
            f"{self.label}  {self.done}{of}  {self.done / elapsed:.1f} req/s  "
            f"p50 {p50:.1f} ms  errors {self.errors}"
        )

    def _draw(self, now: float) -> None:
        self.stream.write("\r" + self.line(now).ljust(70))
        self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self._draw(self.clock())
            self.stream.write("\n")
            self.stream.flush()

"""Load shapes as small strategy objects (one idea each, tenacity-style).

* :class:`ClosedLoop` ``(concurrency)``: N workers, each sends its next request as
  soon as the previous one ends. The send time *is* the scheduled time, so a slow
  server lowers the offered load (that is what closed loops measure).
* :class:`ConstantRate` ``(rps)``: open loop, request *i* scheduled at ``i / rps``.
* :class:`Poisson` ``(rps, seed)``: open loop, exponential inter-arrival gaps with
  mean ``1 / rps`` from a seeded generator (reproducible).
* :class:`Schedule` ``(offsets, name)``: open loop over a finite list of send offsets, e.g.
  one worker process's share of a schedule made once in the parent (``--workers``).

Open-loop shapes expose :meth:`offsets`, an endless iterator of scheduled send
offsets in seconds from the start; the runner never delays the schedule because
earlier requests are slow; :func:`bounded_offsets` cuts them where a run stops (a count
of requests or a duration). :func:`parse_load` reads ``"closed:10"``, ``"rate:5"``,
``"poisson:5"`` (optionally ``"poisson:5:seed"``).
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

__all__ = [
    "ClosedLoop",
    "ConstantRate",
    "LoadShape",
    "OpenLoopShape",
    "Poisson",
    "Schedule",
    "bounded_offsets",
    "parse_load",
]


@runtime_checkable
class LoadShape(Protocol):
    @property
    def kind(self) -> Literal["closed", "open"]: ...

    @property
    def label(self) -> str: ...


@runtime_checkable
class OpenLoopShape(LoadShape, Protocol):
    def offsets(self) -> Iterator[float]: ...


@dataclass(frozen=True, slots=True)
class ClosedLoop:
    """``concurrency`` workers back to back. Example: ``ClosedLoop(10)``."""

    concurrency: int
    kind: Literal["closed", "open"] = "closed"

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {self.concurrency!r}")

    @property
    def label(self) -> str:
        return f"closed:{self.concurrency}"


@dataclass(frozen=True, slots=True)
class ConstantRate:
    """Evenly spaced sends at ``rps`` requests per second. Example: ``ConstantRate(5.0)``."""

    rps: float
    kind: Literal["closed", "open"] = "open"

    def __post_init__(self) -> None:
        if not self.rps > 0:
            raise ValueError(f"rate must be > 0 requests/s, got {self.rps!r}")

    @property
    def label(self) -> str:
        return f"rate:{self.rps:g}"

    def offsets(self) -> Iterator[float]:
        step = 1.0 / self.rps
        return (i * step for i in itertools.count())


@dataclass(frozen=True, slots=True)
class Poisson:
    """Poisson arrivals at mean ``rps`` (exponential gaps), seeded. Example: ``Poisson(5, seed=1)``."""

    rps: float
    seed: int = 0
    kind: Literal["closed", "open"] = "open"

    def __post_init__(self) -> None:
        if not self.rps > 0:
            raise ValueError(f"rate must be > 0 requests/s, got {self.rps!r}")

    @property
    def label(self) -> str:
        return f"poisson:{self.rps:g}"

    def offsets(self) -> Iterator[float]:
        rng = random.Random(self.seed)
        t = 0.0
        while True:
            yield t
            t += rng.expovariate(self.rps)


@dataclass(frozen=True, slots=True)
class Schedule:
    """Open loop over explicit send offsets (seconds from the start, ascending), labelled
    ``name``. Example: ``Schedule((0.0, 0.002, 0.004), "rate:500")``."""

    times: tuple[float, ...]
    name: str = "schedule"
    kind: Literal["closed", "open"] = "open"

    def __post_init__(self) -> None:
        if any(b < a for a, b in itertools.pairwise(self.times)):
            raise ValueError(f"schedule {self.name!r}: offsets must not decrease")

    @property
    def label(self) -> str:
        return self.name

    def offsets(self) -> Iterator[float]:
        return iter(self.times)


def bounded_offsets(
    offsets: Iterable[float], total: int | None, duration_s: float | None, warmup: int = 0
) -> Iterator[float]:
    """The offsets a run sends: at most ``total`` (warm-up included), and after the first
    ``warmup`` only those less than ``duration_s`` after the first measured one.

    >>> list(bounded_offsets(ConstantRate(4).offsets(), None, 0.5, warmup=1))
    [0.0, 0.25, 0.5]
    """
    measure = 0.0
    for i, offset in enumerate(offsets):
        if total is not None and i >= total:
            return
        if i == warmup:
            measure = offset
        if duration_s is not None and i >= warmup and offset - measure >= duration_s:
            return
        yield offset


def parse_load(text: str) -> ClosedLoop | ConstantRate | Poisson:
    """``"closed:10"`` | ``"rate:5"`` | ``"poisson:5"`` | ``"poisson:5:42"`` -> a shape.

    Raises ``ValueError`` naming the bad value and what is accepted.
    """
    parts = text.strip().split(":")
    kind = parts[0].lower()
    accepted = "expected closed:N, rate:R, poisson:R or poisson:R:SEED"
    try:
        if kind == "closed" and len(parts) == 2:
            return ClosedLoop(int(parts[1]))
        if kind in ("rate", "constant") and len(parts) == 2:
            return ConstantRate(float(parts[1]))
        if kind == "poisson" and len(parts) in (2, 3):
            return Poisson(float(parts[1]), int(parts[2]) if len(parts) == 3 else 0)
    except ValueError as exc:
        raise ValueError(f"bad load shape {text!r}: {exc}; {accepted}") from None
    raise ValueError(f"bad load shape {text!r}; {accepted}")

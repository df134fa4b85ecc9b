"""Latency profiles of the mock endpoint, stored as JSON under ``fixtures/profiles/``.

A profile says how long a simulated request takes and how long its answer is:

    ttft        = ttft_base + prefill_per_token_s * prompt_tokens   (+ queueing when full)
    per token   = itl * (1 + load_slowdown * (active - 1) / (capacity - 1))
    total       = ttft + (output_tokens - 1) * per token

``ttft_base``, ``itl`` (inter-token latency, seconds) and ``output_tokens`` are each a
:class:`Distribution`: ``fixed``, ``normal`` or ``lognormal`` given by their *mean* and
*std* (for lognormal the mean/std of the variable itself, not of its log), clamped to
``[min, max]``. ``capacity`` is how many sequences decode at once; more requests
queue (FIFO) and their queueing time adds to their TTFT. ``load_slowdown`` is the
fractional growth of the per-token time at full capacity. ``context_window`` is the
limit behind the automatic ``400 context_length_exceeded``.

>>> p = load_profile("fast")
>>> p.name, p.capacity > 0
('fast', True)
>>> Distribution.from_json(0.5).sample(__import__("random").Random(1))
0.5
"""

from __future__ import annotations

import functools
import json
import math
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from statistics import NormalDist
from typing import Any, Literal

from pytest_iterate.client.errors import ConfigError

__all__ = ["Distribution", "LatencyProfile", "load_profile", "profiles_dir", "shipped_profiles"]

DistKind = Literal["fixed", "normal", "lognormal"]
_KINDS = ("fixed", "normal", "lognormal")
_QUADRATURE_POINTS = 4000


@dataclass(frozen=True, slots=True)
class Distribution:
    """A clamped random variable: ``fixed``, ``normal`` or ``lognormal`` by mean and std.

    >>> d = Distribution("normal", 10.0, 2.0, min=0.0)
    >>> round(d.mean(), 3)
    10.0
    """

    kind: DistKind = "fixed"
    mean_value: float = 0.0
    std: float = 0.0
    min: float | None = None
    max: float | None = None

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise ConfigError(f"distribution kind {self.kind!r} is not one of {', '.join(_KINDS)}")
        if self.std < 0:
            raise ConfigError(f"distribution std must be >= 0, got {self.std}")
        if self.kind == "lognormal" and self.mean_value <= 0:
            raise ConfigError(f"a lognormal distribution needs mean > 0, got {self.mean_value}")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ConfigError(f"distribution min {self.min} is above max {self.max}")

    @classmethod
    def from_json(cls, data: Any, *, what: str = "distribution") -> Distribution:
        """A number is ``fixed``; a mapping has ``dist``, ``mean``, ``std``, ``min``, ``max``."""
        if isinstance(data, int | float) and not isinstance(data, bool):
            return cls("fixed", float(data))
        if not isinstance(data, Mapping):
            raise ConfigError(f"{what} must be a number or an object with 'dist' and 'mean', got {data!r}")
        unknown = set(data) - {"dist", "mean", "std", "min", "max"}
        if unknown:
            raise ConfigError(f"{what} has unknown keys {sorted(unknown)}; use dist, mean, std, min, max")
        try:
            return cls(
                kind=data.get("dist", "fixed"),
                mean_value=float(data["mean"]),
                std=float(data.get("std", 0.0)),
                min=None if data.get("min") is None else float(data["min"]),
                max=None if data.get("max") is None else float(data["max"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"{what} is malformed ({exc}): {dict(data)!r}") from exc

    def _clamp(self, x: float) -> float:
        if self.min is not None and x < self.min:
            x = self.min
        if self.max is not None and x > self.max:
            x = self.max
        return x

    def _raw(self, u_normal: float) -> float:
        """The unclamped value for a standard-normal draw ``u_normal``."""
        if self.kind == "fixed" or self.std == 0:
            return self.mean_value
        if self.kind == "normal":
            return self.mean_value + self.std * u_normal
        sigma2 = math.log1p((self.std / self.mean_value) ** 2)
        mu = math.log(self.mean_value) - sigma2 / 2
        return math.exp(mu + math.sqrt(sigma2) * u_normal)

    def sample(self, rng: random.Random) -> float:
        """One draw (clamped)."""
        if self.kind == "fixed" or self.std == 0:
            return self._clamp(self.mean_value)
        return self._clamp(self._raw(rng.gauss(0.0, 1.0)))

    def mean(self) -> float:
        """The expected value of the *clamped* variable (numeric quadrature, memoised)."""
        if self.kind == "fixed" or self.std == 0:
            return self._clamp(self.mean_value)
        return _clamped_mean(self)


@functools.lru_cache(maxsize=256)
def _clamped_mean(dist: Distribution) -> float:
    nd = NormalDist()
    n = _QUADRATURE_POINTS
    return sum(dist._clamp(dist._raw(nd.inv_cdf((i + 0.5) / n))) for i in range(n)) / n


@dataclass(frozen=True, slots=True)
class LatencyProfile:
    """How the mock behaves: latency model, capacity, context window and model names."""

    name: str
    ttft_base: Distribution = field(default_factory=Distribution)
    prefill_per_token_s: float = 0.0
    itl: Distribution = field(default_factory=Distribution)
    output_tokens: Distribution = field(default_factory=lambda: Distribution("fixed", 64.0))
    capacity: int = 64
    load_slowdown: float = 0.0
    context_window: int = 16384
    models: tuple[str, ...] = ("gpt-4o-mini",)
    description: str = ""

    def __post_init__(self) -> None:
        if self.capacity < 1:
            raise ConfigError(f"profile {self.name!r}: capacity must be >= 1, got {self.capacity}")
        if self.context_window < 1:
            raise ConfigError(f"profile {self.name!r}: context_window must be >= 1")
        if self.prefill_per_token_s < 0 or self.load_slowdown < 0:
            raise ConfigError(f"profile {self.name!r}: prefill_per_token_s and load_slowdown must be >= 0")
        if not self.models:
            raise ConfigError(f"profile {self.name!r}: needs at least one model name")

    @property
    def is_zero(self) -> bool:
        """True when no latency at all is simulated (the fast path of the server)."""
        return self.ttft_base.mean() == 0 and self.itl.mean() == 0 and self.prefill_per_token_s == 0

    def slowdown(self, active: int) -> float:
        """Factor on the per-token time with ``active`` sequences decoding."""
        if self.capacity <= 1 or active <= 1:
            return 1.0
        return 1.0 + self.load_slowdown * (min(active, self.capacity) - 1) / (self.capacity - 1)

    def expected_ttft_s(self, prompt_tokens: int) -> float:
        """Mean TTFT of a lone request (no queueing)."""
        return self.ttft_base.mean() + self.prefill_per_token_s * prompt_tokens

    def expected_output_tokens(self) -> float:
        return max(1.0, self.output_tokens.mean())

    def expected_total_s(self, prompt_tokens: int) -> float:
        """Mean total latency of a lone request not capped by ``max_tokens``."""
        return self.expected_ttft_s(prompt_tokens) + (self.expected_output_tokens() - 1) * self.itl.mean()

    @classmethod
    def from_json(cls, data: Mapping[str, Any], *, name: str | None = None) -> LatencyProfile:
        known = {
            "name",
            "description",
            "ttft_base_s",
            "prefill_per_token_s",
            "itl_s",
            "output_tokens",
            "capacity",
            "load_slowdown",
            "context_window",
            "models",
        }
        unknown = set(data) - known
        if unknown:
            raise ConfigError(f"profile has unknown keys {sorted(unknown)}; known: {sorted(known)}")
        pname = str(data.get("name", name or "custom"))
        try:
            return cls(
                name=pname,
                description=str(data.get("description", "")),
                ttft_base=Distribution.from_json(data.get("ttft_base_s", 0.0), what=f"{pname}.ttft_base_s"),
                prefill_per_token_s=float(data.get("prefill_per_token_s", 0.0)),
                itl=Distribution.from_json(data.get("itl_s", 0.0), what=f"{pname}.itl_s"),
                output_tokens=Distribution.from_json(
                    data.get("output_tokens", 64), what=f"{pname}.output_tokens"
                ),
                capacity=int(data.get("capacity", 64)),
                load_slowdown=float(data.get("load_slowdown", 0.0)),
                context_window=int(data.get("context_window", 16384)),
                models=tuple(str(m) for m in data.get("models", ("gpt-4o-mini",))),
            )
        except (TypeError, ValueError) as exc:
            if isinstance(exc, ConfigError):
                raise
            raise ConfigError(f"profile {pname!r} is malformed: {exc}") from exc


def profiles_dir() -> Path:
    """The folder of the shipped profiles (``fixtures/profiles``)."""
    from pytest_iterate._data import fixtures_dir

    return fixtures_dir() / "profiles"


def shipped_profiles() -> list[str]:
    """Names of the shipped profiles."""
    folder = profiles_dir()
    return sorted(p.stem for p in folder.glob("*.json")) if folder.is_dir() else []


def load_profile(name_or_path: str | Path) -> LatencyProfile:
    """Load a shipped profile by name (``"v1"``) or a JSON file by path.

    An unknown name raises :class:`ConfigError` listing the shipped profiles.
    """
    text = str(name_or_path)
    path = Path(text)
    if not (text.endswith(".json") or path.is_file()):
        path = profiles_dir() / f"{text}.json"
        if not path.is_file():
            raise ConfigError(
                f"unknown mock profile {text!r}; shipped profiles: {', '.join(shipped_profiles())} "
                "(or give the path of a JSON file)"
            )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"mock profile file {str(path)!r} does not exist") from exc
    except (OSError, ValueError) as exc:
        raise ConfigError(f"mock profile file {str(path)!r} is not valid JSON: {exc}") from exc
    if not isinstance(data, Mapping):
        raise ConfigError(f"mock profile file {str(path)!r} must hold a JSON object")
    return LatencyProfile.from_json(data, name=path.stem)

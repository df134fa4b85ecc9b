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

Every value is checked against :data:`LIMITS` (a profile can neither sleep a
negative or NaN time nor build a billion-token answer): a value outside its range,
a non-finite number anywhere in the file (``NaN``, ``Infinity``) or a wrong type is
refused with a :class:`ConfigError` naming the file, the key and the accepted
range. The draws of a distribution are clamped to its key's range too (a ``normal``
without ``min`` never goes below 0; ``output_tokens`` never above 100,000).

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
import statistics
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from statistics import NormalDist
from typing import Any, Literal

from pytest_iterate.client.errors import ConfigError

__all__ = [
    "LIMITS",
    "MAX_OUTPUT_TOKENS",
    "Distribution",
    "LatencyProfile",
    "load_profile",
    "profiles_dir",
    "shipped_profiles",
]

DistKind = Literal["fixed", "normal", "lognormal"]
_KINDS = ("fixed", "normal", "lognormal")
_QUADRATURE_POINTS = 4000

#: The most tokens one simulated answer may have.
MAX_OUTPUT_TOKENS = 100_000
#: Accepted range of every numeric profile key (JSON names; a distribution's mean, min,
#: max and std must each lie in it): seconds, tokens, sequences, or a factor.
LIMITS: Mapping[str, tuple[float, float]] = {
    "ttft_base_s": (0.0, 600.0),
    "prefill_per_token_s": (0.0, 1.0),
    "itl_s": (0.0, 60.0),
    "output_tokens": (0.0, float(MAX_OUTPUT_TOKENS)),
    "capacity": (1, 1_000_000),
    "load_slowdown": (0.0, 100.0),
    "context_window": (1, 10_000_000),
}
_MAX_MODELS = 1000


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
        parts = {"mean": self.mean_value, "std": self.std, "min": self.min, "max": self.max}
        for part, value in parts.items():
            if value is not None and not math.isfinite(value):
                raise ConfigError(f"distribution {part} must be a finite number, got {value!r}")
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

    def within(self, lo: float, hi: float) -> Distribution:
        """The same distribution with draws clamped to ``[lo, hi]`` too."""
        low = lo if self.min is None else max(self.min, lo)
        high = hi if self.max is None else min(self.max, hi)
        if low == self.min and high == self.max:
            return self
        return replace(self, min=low, max=high)

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

    def mean_of(self, fn: Callable[[float], float]) -> float:
        """The expected value of ``fn`` of the clamped variable (numeric quadrature)."""
        if self.kind == "fixed" or self.std == 0:
            return fn(self._clamp(self.mean_value))
        return statistics.fmean(fn(x) for x in _clamped_points(self))


@functools.lru_cache(maxsize=256)
def _clamped_mean(dist: Distribution) -> float:
    nd = NormalDist()
    n = _QUADRATURE_POINTS
    return sum(dist._clamp(dist._raw(nd.inv_cdf((i + 0.5) / n))) for i in range(n)) / n


@functools.lru_cache(maxsize=64)
def _clamped_points(dist: Distribution) -> tuple[float, ...]:
    """Equal-probability quantiles of the clamped variable (the quadrature nodes of ``mean``)."""
    nd = NormalDist()
    n = _QUADRATURE_POINTS
    return tuple(dist._clamp(dist._raw(nd.inv_cdf((i + 0.5) / n))) for i in range(n))


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
        where = f"mock profile {self.name!r}"
        for key, dist_field in _DISTRIBUTIONS.items():
            dist = getattr(self, dist_field)
            _check_distribution(where, key, dist)
            if dist.kind != "fixed" and dist.std > 0:  # draws stay inside the key's range
                object.__setattr__(self, dist_field, dist.within(*LIMITS[key]))
        for key in ("prefill_per_token_s", "load_slowdown"):
            _check_number(where, key, getattr(self, key))
        for key in ("capacity", "context_window"):
            _check_integer(where, key, getattr(self, key))
        _check_models(where, self.models)

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

    def expected_output_tokens(self, max_tokens: int | None = None) -> float:
        """Mean answer length in tokens (``max(1, round(draw))``), cut at ``max_tokens``.

        The mock's answers meet their drawn length within a few tokens, so this is
        the mean of what a request receives up to that slack.
        """
        if max_tokens is None:
            return max(1.0, self.output_tokens.mean())
        cap = max(0, max_tokens)
        return self.output_tokens.mean_of(lambda x: float(min(max(1, round(x)), cap)))

    def expected_total_s(self, prompt_tokens: int, max_tokens: int | None = None) -> float:
        """Mean total latency of a lone request (no queueing, no load slowdown)."""
        n_out = self.expected_output_tokens(max_tokens)
        return self.expected_ttft_s(prompt_tokens) + max(0.0, n_out - 1) * self.itl.mean()

    @classmethod
    def from_json(
        cls, data: Mapping[str, Any], *, name: str | None = None, source: str | None = None
    ) -> LatencyProfile:
        """A profile from its JSON object; errors name ``source`` (the file) and the key."""
        pname = str(data.get("name", name or "custom"))
        where = f"mock profile file {source!r}" if source else f"mock profile {pname!r}"
        known = {"name", "description", "models", *LIMITS}
        unknown = set(data) - known
        if unknown:
            raise ConfigError(f"{where}: unknown keys {sorted(unknown)}; known: {sorted(known)}")
        _check_finite(where, data, "")
        fields: dict[str, Any] = {}  # keys left out keep the dataclass defaults
        for key, attr in _DISTRIBUTIONS.items():
            if key in data:
                dist = Distribution.from_json(data[key], what=f"{where}: {key}")
                _check_distribution(where, key, dist)
                fields[attr] = dist
        for key in ("prefill_per_token_s", "load_slowdown"):
            if key in data:
                _check_number(where, key, data[key])
                fields[key] = float(data[key])
        for key in ("capacity", "context_window"):
            if key in data:
                _check_integer(where, key, data[key])
                fields[key] = int(data[key])
        models = data.get("models", ("gpt-4o-mini",))
        _check_models(where, models)
        return cls(name=pname, description=str(data.get("description", "")), models=tuple(models), **fields)


_DISTRIBUTIONS = {"ttft_base_s": "ttft_base", "itl_s": "itl", "output_tokens": "output_tokens"}


def _range_text(key: str) -> str:
    lo, hi = LIMITS[key.split(".", 1)[0]]
    return f"accepted: {_plain(lo)} <= {key} <= {_plain(hi)}"


def _plain(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def _check_number(where: str, key: str, value: Any) -> None:
    """A finite number inside ``LIMITS`` of the key (``"itl_s.mean"`` uses ``itl_s``'s range)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{where}: {key} = {value!r} is not a number; {_range_text(key)}")
    if not math.isfinite(value):
        raise ConfigError(f"{where}: {key} = {value!r} is not a finite number; {_range_text(key)}")
    lo, hi = LIMITS[key.split(".", 1)[0]]
    if not lo <= value <= hi:
        raise ConfigError(f"{where}: {key} = {value!r} is out of range; {_range_text(key)}")


def _check_integer(where: str, key: str, value: Any) -> None:
    _check_number(where, key, value)
    if value != int(value):
        raise ConfigError(f"{where}: {key} = {value!r} is not a whole number; {_range_text(key)}")


def _check_distribution(where: str, key: str, dist: Distribution) -> None:
    parts = {"mean": dist.mean_value, "std": dist.std, "min": dist.min, "max": dist.max}
    for part, value in parts.items():
        if value is not None:
            _check_number(where, f"{key}.{part}" if dist.kind != "fixed" or part != "mean" else key, value)


def _check_models(where: str, models: Any) -> None:
    ok = isinstance(models, list | tuple) and 1 <= len(models) <= _MAX_MODELS
    if not ok or not all(isinstance(m, str) and m.strip() for m in models):
        raise ConfigError(
            f"{where}: models = {models!r} is not a list of 1 to {_MAX_MODELS} non-empty model names"
        )


def _check_finite(where: str, value: Any, path: str) -> None:
    """Refuse NaN and infinities anywhere in the JSON (``json`` reads ``NaN`` and ``1e999``)."""
    if isinstance(value, float) and not math.isfinite(value):
        accepted = _range_text(path) if path.split(".", 1)[0] in LIMITS else "accepted: finite numbers"
        raise ConfigError(f"{where}: {path} = {value!r} is not a finite number; {accepted}")
    if isinstance(value, Mapping):
        for k, v in value.items():
            _check_finite(where, v, f"{path}.{k}" if path else str(k))
    elif isinstance(value, list | tuple):
        for i, v in enumerate(value):
            _check_finite(where, v, f"{path}[{i}]")


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
    return LatencyProfile.from_json(data, name=path.stem, source=str(path))

"""The per-script estimate: an upper bound of the server's count, learned from what it reports.

A prompt is measured as a :class:`~.scripts.ScriptProfile` ``n``: its cl100k tokens
per script class, plus the chat format as ``template``. A server with another
tokenizer counts about ``sum(w[c] * n[c])`` for it, with an unknown cost ``w[c]`` per
class (SmolLM2: about 1.05 for English letters, 1.7 for Chinese). For every endpoint
and model, :class:`ScriptLearner` bounds that count from above in two ways and uses
the smaller:

**Sound intervals.** Each class has an interval ``[lower, upper]`` of its cost,
starting from :func:`priors_for` the model: a model whose tokenizer counts at most
what cl100k counts (OpenAI's) starts at ``[0.5, 1 + margin]``; any other model at
intervals wide enough for the open tokenizers we measured (SmolLM2, Llama, Qwen,
Mistral: letters up to 1.5, digits and CJK up to 3, other scripts up to 4), so a
server nobody measured is bounded from its first request on. Every observation
narrows them by constraint propagation: with the server's count ``S`` (widened by
``margin`` and ``slack_tokens``), a class cannot cost more per token than what is
left of ``S`` when every other class costs its least. The bound ``sum(upper * n)``
holds for any mix of the classes, but the classes that always come together (letters,
punctuation and spaces) stay wide.

**The fit.** A weighted least-squares fit of ``w`` over the last ``memory``
observations (relative errors; each class pulled towards a typical cost where the
data says little) gives a prediction ``w . n`` and its variance ``n' C n``; the
bound is ``w . n + z * sqrt(n' C n + (sigma * w . n)^2)``, sigma the scatter of the
observations around the fit (at least 2 %). It is tight for mixes like the ones
observed and as wide as the prior in directions never observed: English text
teaches nothing about Chinese, so a mixed prompt is bounded by what was learned of
each part. It is clamped into the sound bounds, and inflated until every remembered
observation is covered.

A count above the sound bound (a tokenizer worse than the prior) raises the classes
the prompt holds; a 400 that states the server's count is an observation, and one
that states no count raises the classes the prompt holds by ``tighten_factor``.

>>> from pytest_iterate.tokens.scripts import ScriptProfile
>>> learner = ScriptLearner()
>>> english = ScriptProfile.of(latin=900, punct=60, space=40)
>>> learner.estimate("local", english, "smollm2")       # the priors of an unknown model
1690
>>> learner.observe("local", english, 1050, "smollm2")  # the server counted 1050
>>> 1050 < learner.estimate("local", english, "smollm2") < 1200
True
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pytest_iterate.tokens.scripts import SCRIPTS, ScriptProfile

if TYPE_CHECKING:
    from pytest_iterate.client.config import IterateConfig
    from pytest_iterate.tokens.windows import ContextErrorInfo

__all__ = ["CL100K_OR_LESS", "OPEN_TOKENIZER_PRIORS", "TYPICAL_COSTS", "ScriptLearner", "priors_for"]

#: [lower, upper] server tokens per cl100k token for a tokenizer nobody measured yet.
OPEN_TOKENIZER_PRIORS: Mapping[str, tuple[float, float]] = {
    "latin": (0.6, 1.5),
    "digits": (0.5, 4.0),
    "punct": (0.4, 3.0),
    "space": (0.2, 4.0),
    "cjk": (0.4, 4.0),
    "symbols": (0.3, 5.0),
    "other": (0.3, 5.0),
    "template": (0.0, 5.0),
}

#: Where the fit is pulled for a class the observations say little about.
TYPICAL_COSTS: Mapping[str, float] = {
    "latin": 1.1,
    "digits": 1.5,
    "punct": 1.2,
    "space": 1.0,
    "cjk": 1.5,
    "symbols": 1.5,
    "other": 2.0,
    "template": 1.5,
}

#: Model name prefixes whose tokenizer (cl100k_base, o200k_base) counts at most what cl100k counts.
CL100K_OR_LESS: tuple[str, ...] = (
    "gpt-4",
    "gpt-3.5",
    "gpt-5",
    "o1",
    "o3",
    "o4",
    "chatgpt",
    "text-embedding-3",
)

_NOISE = 0.02  # the least relative scatter of a real count around the linear model
_Z = 3.0  # standard deviations above the prediction
_FULL_EVERY = 8  # observations between two propagations over all remembered ones
_REFIT_EVERY = 4  # observations between two fits once the first few are in (unless one is not covered)


def priors_for(model: str | None, margin: float = 0.05) -> dict[str, tuple[float, float]]:
    """The starting intervals for ``model`` (see the module doc)."""
    name = (model or "").strip().lower().rsplit("/", 1)[-1]
    if name and any(name.startswith(prefix) for prefix in CL100K_OR_LESS):
        return {script: (0.5 if script != "template" else 0.0, 1.0 + margin) for script in SCRIPTS}
    return dict(OPEN_TOKENIZER_PRIORS)


@dataclass(slots=True)
class _State:
    lower: list[float]  # the sound intervals
    upper: list[float]
    typical: list[float]
    prior_lower: list[float]
    prior_upper: list[float]
    observations: deque[tuple[tuple[int, ...], int]] = field(default_factory=deque)
    count: int = 0
    w: list[float] | None = None  # the fit (None: no observation yet)
    axes: list[tuple[float, list[float]]] | None = None  # its covariance: (sd, direction) pairs
    sigma: float = _NOISE  # relative scatter of the observations around the fit
    inflate: float = 1.0  # so every remembered observation is covered
    stale: bool = False  # observations arrived since the last fit (fitted on the next estimate)


class ScriptLearner:
    """Per endpoint and model, an upper bound of the server's prompt tokens (module doc).

    ``margin`` (default ``config.token_safety_margin``) and ``slack_tokens`` widen
    every observed count for the sound intervals and are the least headroom over a
    remembered observation; ``memory`` bounds the observations kept per endpoint and
    model; ``priors`` replaces :func:`priors_for` for every model.
    """

    def __init__(
        self,
        *,
        margin: float = 0.05,
        slack_tokens: int = 2,
        memory: int = 32,
        tighten_factor: float = 1.25,
        priors: Mapping[str, tuple[float, float]] | None = None,
    ) -> None:
        if not 0.0 <= margin < 0.5:
            raise ValueError(f"margin={margin!r} must be in [0, 0.5)")
        if memory < 1:
            raise ValueError(f"memory={memory!r} must be >= 1")
        if tighten_factor <= 1.0:
            raise ValueError(f"tighten_factor={tighten_factor!r} must be > 1")
        if priors is not None:
            _check_priors(priors)
        self.margin = margin
        self.slack_tokens = slack_tokens
        self.memory = memory
        self.tighten_factor = tighten_factor
        self.priors = dict(priors) if priors is not None else None
        self._states: dict[tuple[str, str], _State] = {}
        self._windows: dict[str, int] = {}
        self._open: set[str] = set()

    @classmethod
    def from_config(cls, config: IterateConfig) -> ScriptLearner:
        return cls(margin=config.token_safety_margin)

    def __repr__(self) -> str:
        return f"ScriptLearner(margin={self.margin}, endpoints={len(self._states)})"

    # -- reading --------------------------------------------------------------------
    def _state(self, endpoint_key: str, model: str | None) -> _State:
        key = (endpoint_key, model or "")
        state = self._states.get(key)
        if state is None:
            name = None if endpoint_key in self._open else model
            priors = self.priors or priors_for(name, self.margin)
            lower = [priors[s][0] for s in SCRIPTS]
            upper = [priors[s][1] for s in SCRIPTS]
            typical = [
                min(max(TYPICAL_COSTS[s], lo), hi) for s, lo, hi in zip(SCRIPTS, lower, upper, strict=True)
            ]
            state = self._states[key] = _State(
                lower, upper, typical, list(lower), list(upper), deque(maxlen=self.memory)
            )
        return state

    def estimate(self, endpoint_key: str, profile: ScriptProfile, model: str | None = None) -> int:
        """Upper bound of the server's tokens for a prompt of ``profile``."""
        return math.ceil(self._bound(self._state(endpoint_key, model), profile.counts) - 1e-9)

    def intervals(self, endpoint_key: str, model: str | None = None) -> dict[str, tuple[float, float]]:
        """The sound ``[lower, upper]`` cost per class."""
        state = self._state(endpoint_key, model)
        return {s: (state.lower[i], state.upper[i]) for i, s in enumerate(SCRIPTS)}

    def ratio(self, endpoint_key: str, script: str, model: str | None = None) -> float:
        """The bound per cl100k token of a text of one class only (what a pure text would cost)."""
        if script not in SCRIPTS:
            raise ValueError(f"unknown script class {script!r}; classes: {', '.join(SCRIPTS)}")
        counts = tuple(1000 if s == script else 0 for s in SCRIPTS)
        return self._bound(self._state(endpoint_key, model), counts) / 1000

    def observations(self, endpoint_key: str, model: str | None = None) -> int:
        """How many counts this endpoint and model taught so far."""
        return self._state(endpoint_key, model).count

    def window(self, endpoint_key: str) -> int | None:
        """A context window the endpoint stated in an error, if any."""
        return self._windows.get(endpoint_key)

    def assume_open(self, endpoint_key: str) -> None:
        """The endpoint is a server of its own (it has a tokenize route): whatever its model is
        called, bound it with the open-tokenizer priors (a local model named ``gpt-4o`` is
        not counted like OpenAI's). Applies to models not seen on it yet."""
        self._open.add(endpoint_key)

    # -- learning -------------------------------------------------------------------
    def observe(
        self, endpoint_key: str, profile: ScriptProfile, server: int, model: str | None = None
    ) -> None:
        """Learn that the server counted ``server`` tokens for a prompt of ``profile``."""
        if server <= 0 or profile.total <= 0:
            return
        state = self._state(endpoint_key, model)
        state.count += 1
        state.observations.append((profile.counts, server))
        self._raise_sound(state, profile.counts, server)
        # the new count narrows the intervals at once; every so often all of them again
        self._narrow(state, [(profile.counts, server)] if state.count % _FULL_EVERY else None)
        # the fit is redone on the next estimate: at once when this count is not covered with
        # the margin, else every few counts (a refit is the costly part: ~1 ms)
        due = state.count <= _FULL_EVERY or state.count % _REFIT_EVERY == 0 or state.w is None
        if due or self._bound(state, profile.counts) < server * (1.0 + self.margin / 2) + 1:
            state.stale = True

    def learn_from_error(
        self,
        endpoint_key: str,
        profile: ScriptProfile,
        info: ContextErrorInfo,
        *,
        max_tokens: int | None = None,
        model: str | None = None,
    ) -> None:
        """Tighten after a 400 context error for a prompt of ``profile``.

        The server's prompt count (stated, or its total minus our ``max_tokens``) is
        an observation; without one the classes the prompt holds grow by
        ``tighten_factor``. A stated window is remembered for the endpoint.
        """
        if info.context_window is not None:
            known = self._windows.get(endpoint_key)
            self._windows[endpoint_key] = min(known, info.context_window) if known else info.context_window
        server = info.server_prompt_tokens
        if server is None and info.requested_tokens is not None and max_tokens is not None:
            server = info.requested_tokens - max_tokens
        before = self.estimate(endpoint_key, profile, model)
        if server is not None and server > 0:
            self.observe(endpoint_key, profile, server, model)
        if self.estimate(endpoint_key, profile, model) > before:
            return
        # the server said too long but the bound did not move: raise blindly
        state = self._state(endpoint_key, model)
        for i, n in enumerate(profile.counts):
            if n:
                state.upper[i] *= self.tighten_factor
                state.lower[i] = min(state.lower[i], state.upper[i])
        state.inflate *= self.tighten_factor

    # -- internals ------------------------------------------------------------------
    def _bound(self, state: _State, counts: tuple[int, ...]) -> float:
        if state.stale:
            state.stale = False
            self._fit(state)
            self._cover(state)
        sound = sum(up * n for up, n in zip(state.upper, counts, strict=True))
        if state.w is None or state.axes is None:
            return sound
        least = sum(lo * n for lo, n in zip(state.lower, counts, strict=True))
        mean = sum(w * n for w, n in zip(state.w, counts, strict=True))
        # the fit's uncertainty along each principal axis of its covariance, added up: a mix is
        # bounded as if every independent direction it leans on were at its worst (3 sd) at once
        spread = sum(
            sd * abs(sum(v * n for v, n in zip(axis, counts, strict=True))) for sd, axis in state.axes
        )
        fitted = (mean + _Z * math.hypot(spread, state.sigma * mean)) * state.inflate
        return min(sound, max(least, fitted))

    def _widened(self, server: int) -> tuple[float, float]:
        return (
            server * (1.0 + self.margin) + self.slack_tokens,
            max(0.0, server * (1.0 - self.margin) - self.slack_tokens),
        )

    def _raise_sound(self, state: _State, counts: tuple[int, ...], server: int) -> None:
        """A count above the sound bound: the prior was wrong for these classes; widen them."""
        high = sum(up * n for up, n in zip(state.upper, counts, strict=True))
        need = server * (1.0 + self.margin) + self.slack_tokens
        if high >= need:
            return
        factor = need / high if high > 0 else 1.0
        for i, n in enumerate(counts):
            if n:  # and forget what the wrong upper ends taught about the lower ends
                state.upper[i] = state.upper[i] * factor if state.upper[i] > 0 else need / sum(counts)
                state.lower[i] = state.prior_lower[i]

    def _narrow(
        self, state: _State, observations: list[tuple[tuple[int, ...], int]] | None = None, sweeps: int = 2
    ) -> None:
        """Constraint propagation of ``observations`` (None: every remembered one) over the intervals."""
        lower, upper = state.lower, state.upper
        for _ in range(sweeps if observations is None else 1):
            for counts, server in state.observations if observations is None else observations:
                high, low = self._widened(server)
                lo_sum = sum(lo * n for lo, n in zip(lower, counts, strict=True))
                hi_sum = sum(up * n for up, n in zip(upper, counts, strict=True))
                for i, n in enumerate(counts):
                    if not n:
                        continue
                    most = (high - (lo_sum - lower[i] * n)) / n
                    least = (low - (hi_sum - upper[i] * n)) / n
                    if least > lower[i]:
                        least = min(least, upper[i])
                        lo_sum += (least - lower[i]) * n
                        lower[i] = least
                    if most < upper[i]:
                        most = max(most, lower[i])
                        hi_sum += (most - upper[i]) * n
                        upper[i] = most

    def _fit(self, state: _State) -> None:
        """Weighted least squares of the costs (relative errors), each pulled to its typical cost."""
        k = k_count = len(SCRIPTS)
        a = [[0.0] * k for _ in range(k)]
        b = [0.0] * k
        for counts, server in state.observations:
            weight = 1.0 / (server * server)
            present = [i for i, n in enumerate(counts) if n]
            for i in present:
                b[i] += weight * counts[i] * server
                row = a[i]
                for j in present:
                    row[j] += weight * counts[i] * counts[j]
        for i in range(k):
            # the prior of the fit spans the sound prior: typical +- z spreads covers [lower, upper]
            reach = max(state.prior_upper[i] - state.typical[i], state.typical[i] - state.prior_lower[i])
            spread = max(reach / _Z, 0.01)
            ridge = (_NOISE / spread) ** 2
            a[i][i] += ridge
            b[i] += ridge * state.typical[i]
        inverse = _invert(a)
        if inverse is None:  # pragma: no cover - the ridge keeps the matrix positive definite
            return
        w = [sum(inverse[i][j] * b[j] for j in range(k)) for i in range(k)]
        squares = 0.0
        for counts, server in state.observations:
            predicted = sum(wi * n for wi, n in zip(w, counts, strict=True))
            squares += ((predicted - server) / server) ** 2
        seen = sum(1 for i in range(k) if any(c[i] for c, _ in state.observations))
        sigma = max(math.sqrt(squares / max(1, len(state.observations) - seen)), _NOISE)
        state.w = w
        state.sigma = sigma
        # the covariance of the fit is the scatter seen times the inverse normal matrix
        values, vectors = _eigh(inverse)
        state.axes = [
            (sigma * math.sqrt(max(value, 0.0)), [vectors[r][k] for r in range(k_count)])
            for k, value in enumerate(values)
        ]
        state.inflate = 1.0

    def _cover(self, state: _State) -> None:
        """Inflate the fitted bound until every remembered prompt is covered with the margin."""
        for counts, server in state.observations:
            need = server * (1.0 + self.margin / 2) + 1
            bound = self._bound(state, counts)
            if bound < need:
                state.inflate *= need / bound


def _invert(matrix: list[list[float]]) -> list[list[float]] | None:
    """The inverse of a small positive definite matrix (Gauss-Jordan), None if singular."""
    n = len(matrix)
    a = [row[:] + [1.0 if i == j else 0.0 for j in range(n)] for i, row in enumerate(matrix)]
    for col in range(n):
        pivot = max(range(col, n), key=lambda r: abs(a[r][col]))
        if abs(a[pivot][col]) < 1e-300:
            return None
        a[col], a[pivot] = a[pivot], a[col]
        scale = a[col][col]
        a[col] = [v / scale for v in a[col]]
        for r in range(n):
            if r != col and a[r][col]:
                factor = a[r][col]
                a[r] = [v - factor * p for v, p in zip(a[r], a[col], strict=True)]
    return [row[n:] for row in a]


def _eigh(matrix: list[list[float]]) -> tuple[list[float], list[list[float]]]:
    """Eigenvalues and eigenvectors (columns) of a small symmetric matrix (cyclic Jacobi)."""
    n = len(matrix)
    a = [row[:] for row in matrix]
    v = [[1.0 if i == j else 0.0 for j in range(n)] for i in range(n)]
    scale = sum(a[i][i] ** 2 for i in range(n)) or 1.0
    for _ in range(60):
        off = sum(a[i][j] ** 2 for i in range(n) for j in range(i + 1, n))
        if off <= 1e-24 * scale:
            break
        for p in range(n):
            for q in range(p + 1, n):
                if a[p][q] == 0.0:
                    continue
                theta = (a[q][q] - a[p][p]) / (2.0 * a[p][q])
                t = math.copysign(1.0, theta) / (abs(theta) + math.sqrt(theta * theta + 1.0))
                c = 1.0 / math.sqrt(t * t + 1.0)
                s = t * c
                for k in range(n):
                    akp, akq = a[k][p], a[k][q]
                    a[k][p], a[k][q] = c * akp - s * akq, s * akp + c * akq
                for k in range(n):
                    apk, aqk = a[p][k], a[q][k]
                    a[p][k], a[q][k] = c * apk - s * aqk, s * apk + c * aqk
                for k in range(n):
                    vkp, vkq = v[k][p], v[k][q]
                    v[k][p], v[k][q] = c * vkp - s * vkq, s * vkp + c * vkq
    return [a[i][i] for i in range(n)], v


def _check_priors(priors: Mapping[str, tuple[float, float]]) -> None:
    missing = [s for s in SCRIPTS if s not in priors]
    if missing:
        raise ValueError(
            f"priors miss class(es) {', '.join(missing)}; give one interval per {', '.join(SCRIPTS)}"
        )
    for script, (lo, hi) in priors.items():
        if not 0.0 <= lo <= hi:
            raise ValueError(f"prior for {script!r} is [{lo}, {hi}]; need 0 <= lower <= upper")

"""Context windows per model and endpoint, and the learned server/ours token ratio.

:func:`context_window_for` looks a model up in :data:`DEFAULT_WINDOWS` by prefix,
case-insensitively, after dropping a provider path (``meta-llama/``) and
punctuation, so ``gpt-4o-mini-2024-07-18``, ``meta-llama/Llama-3.1-8B-Instruct``
and ``llama3.1:8b`` all resolve; the longest matching prefix wins.

:class:`ContextWindows` resolves the window of one call, first match wins:

    per-endpoint override  >  config.context_window  >  the model table  >  the
    default (4096); a smaller window an endpoint stated in a 400 caps all of them

:class:`RatioLearner` keeps, per endpoint, an upper bound of the server's prompt
tokens for a prompt we counted as ``n``: ``ceil(n * ratio + slack)``. ``ratio``
starts at ``1 + config.token_safety_margin`` and rises to the largest
``usage.prompt_tokens / n`` seen (times ``1 + learn_margin``); ``slack`` absorbs
the fixed per-request overhead of a chat template on short prompts. A server with
another tokenizer (llama.cpp with SmolLM2 counts more than cl100k) therefore is
never overflowed once seen, and a 400 ``context_length_exceeded`` that states the
counts (:func:`parse_context_error`) tightens the bound before the one retry.

>>> context_window_for("gpt-4o-mini"), context_window_for("meta-llama/Llama-3.1-8B-Instruct")
(128000, 131072)
>>> context_window_for("no-such-model", default=4096)
4096
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pytest_iterate.client.config import IterateConfig

__all__ = [
    "DEFAULT_WINDOW",
    "DEFAULT_WINDOWS",
    "ContextErrorInfo",
    "ContextWindows",
    "RatioLearner",
    "context_window_for",
    "normalize_model",
    "parse_context_error",
]

DEFAULT_WINDOW = 4096

#: (model prefix, context window in tokens); matched after :func:`normalize_model`.
DEFAULT_WINDOWS: tuple[tuple[str, int], ...] = (
    ("gpt-4o", 128000),
    ("gpt-4.1", 1047576),
    ("gpt-4-turbo", 128000),
    ("gpt-4-1106", 128000),
    ("gpt-4-0125", 128000),
    ("gpt-4-32k", 32768),
    ("gpt-4", 8192),
    ("gpt-3.5-turbo-instruct", 4096),
    ("gpt-3.5-turbo", 16385),
    ("o1", 200000),
    ("o3", 200000),
    ("o4-mini", 200000),
    ("llama-3.1", 131072),
    ("llama-3.2", 131072),
    ("llama-3.3", 131072),
    ("llama-4", 131072),
    ("llama-3", 8192),
    ("llama-2", 4096),
    ("qwen2.5", 32768),
    ("qwen3", 32768),
    ("qwen2", 32768),
    ("smollm2", 2048),
    ("smollm", 2048),
    ("mistral", 32768),
    ("mixtral", 32768),
    ("phi-3-mini-128k", 131072),
    ("phi-3", 4096),
    ("gemma-2", 8192),
    ("gemma", 8192),
)

_PUNCT = re.compile(r"[\s_\-:]+")
_VENDORS = ("meta", "microsoft", "google", "mistralai")


def normalize_model(model: str) -> str:
    """Lower case, no provider path, no ``-``/``_``/``:``/spaces (dots are kept)."""
    name = _PUNCT.sub("", model.strip().lower().rsplit("/", 1)[-1])
    for vendor in _VENDORS:
        if name.startswith(vendor) and len(name) > len(vendor):
            return name[len(vendor) :]
    return name


def context_window_for(
    model: str | None,
    *,
    default: int = DEFAULT_WINDOW,
    table: tuple[tuple[str, int], ...] = DEFAULT_WINDOWS,
) -> int:
    """The context window of ``model`` from ``table`` (longest prefix), else ``default``."""
    if not model:
        return default
    name = normalize_model(model)
    best: tuple[int, int] | None = None
    for prefix, window in table:
        key = normalize_model(prefix)
        if name.startswith(key) and (best is None or len(key) > best[0]):
            best = (len(key), window)
    return best[1] if best else default


@dataclass(frozen=True, slots=True)
class ContextErrorInfo:
    """Counts stated by a 400 context-length error (any of them may be unknown)."""

    context_window: int | None = None
    requested_tokens: int | None = None  # prompt + completion, as the server counted
    prompt_tokens: int | None = None
    completion_tokens: int | None = None

    @property
    def server_prompt_tokens(self) -> int | None:
        if self.prompt_tokens is not None:
            return self.prompt_tokens
        if self.requested_tokens is not None and self.completion_tokens is not None:
            return self.requested_tokens - self.completion_tokens
        return None


_CONTEXT_HINTS = (
    "context_length_exceeded",
    "exceed_context_size",
    "context length",
    "context size",
    "context window",
    "maximum context",
    "too many tokens",
    "prompt is too long",
)
_RE_WINDOW = (
    re.compile(r"maximum context length is (\d+)", re.I),
    re.compile(r"context (?:window|size|length) (?:is|of) (\d+)", re.I),
    re.compile(r'"n_ctx"\s*:\s*(\d+)'),
)
_RE_REQUESTED = (
    re.compile(r"you requested (\d+) tokens", re.I),
    re.compile(r"resulted in (\d+) tokens", re.I),
)
_RE_PROMPT = (
    re.compile(r"\((\d+) in the messages", re.I),
    re.compile(r"\((\d+) in (?:your|the) prompt", re.I),
    re.compile(r'"n_prompt_tokens"\s*:\s*(\d+)'),
    re.compile(r"your messages resulted in (\d+) tokens", re.I),
    re.compile(r"your prompt (?:has|contains) (\d+) tokens", re.I),
)
_RE_COMPLETION = (re.compile(r"(\d+) in the completion", re.I),)


def is_context_error_text(text: str) -> bool:
    """True when an error code or message says the context window was exceeded."""
    lowered = text.lower()
    return any(hint in lowered for hint in _CONTEXT_HINTS)


def parse_context_error(text: str) -> ContextErrorInfo:
    """Pull the counts out of an OpenAI, vLLM or llama.cpp context-length error text.

    >>> parse_context_error("This model's maximum context length is 2048 tokens. However, "
    ...     "you requested 2301 tokens (1789 in the messages, 512 in the completion).")
    ContextErrorInfo(context_window=2048, requested_tokens=2301, prompt_tokens=1789, completion_tokens=512)
    """

    def first(patterns: tuple[re.Pattern[str], ...]) -> int | None:
        for pattern in patterns:
            match = pattern.search(text)
            if match:
                return int(match.group(1))
        return None

    return ContextErrorInfo(
        context_window=first(_RE_WINDOW),
        requested_tokens=first(_RE_REQUESTED),
        prompt_tokens=first(_RE_PROMPT),
        completion_tokens=first(_RE_COMPLETION),
    )


@dataclass(slots=True)
class _Bound:
    ratio: float
    slack: float = 0.0
    observations: int = 0


class RatioLearner:
    """Per-endpoint upper bound of the server's prompt count for our count.

    ``initial_ratio`` is ``1 + config.token_safety_margin`` by default; observations
    on prompts shorter than ``min_learn_tokens`` only raise the additive slack, so a
    chat template's fixed overhead on a tiny prompt does not inflate the ratio used
    for long ones. ``tighten_factor`` is applied when a server says "too long"
    without saying by how much.
    """

    def __init__(
        self,
        *,
        initial_ratio: float = 1.05,
        learn_margin: float = 0.02,
        min_learn_tokens: int = 32,
        tighten_factor: float = 1.25,
    ) -> None:
        if initial_ratio < 1.0:
            raise ValueError(f"initial_ratio={initial_ratio!r} must be >= 1.0")
        self.initial_ratio = initial_ratio
        self.learn_margin = learn_margin
        self.min_learn_tokens = min_learn_tokens
        self.tighten_factor = tighten_factor
        self._bounds: dict[str, _Bound] = {}
        self._windows: dict[str, int] = {}

    @classmethod
    def from_config(cls, config: IterateConfig) -> RatioLearner:
        return cls(initial_ratio=1.0 + config.token_safety_margin)

    def _bound(self, endpoint_key: str) -> _Bound:
        bound = self._bounds.get(endpoint_key)
        if bound is None:
            bound = self._bounds[endpoint_key] = _Bound(self.initial_ratio)
        return bound

    def ratio(self, endpoint_key: str) -> float:
        return self._bound(endpoint_key).ratio

    def slack(self, endpoint_key: str) -> float:
        return self._bound(endpoint_key).slack

    def estimate(self, endpoint_key: str, ours: int) -> int:
        """Upper bound of the server's prompt tokens for a prompt we count as ``ours``."""
        bound = self._bound(endpoint_key)
        return math.ceil(ours * bound.ratio + bound.slack - 1e-9)

    def budget(self, endpoint_key: str, server_tokens: int) -> int:
        """The largest count of ours whose estimate stays within ``server_tokens``."""
        bound = self._bound(endpoint_key)
        ours = math.floor((server_tokens - bound.slack) / bound.ratio + 1e-9)
        while ours > 0 and self.estimate(endpoint_key, ours) > server_tokens:
            ours -= 1
        return max(ours, 0)

    def observe(self, endpoint_key: str, ours: int, server: int) -> None:
        """Learn from a success: we counted ``ours``, the server reported ``server``."""
        if ours <= 0 or server <= 0:
            return
        bound = self._bound(endpoint_key)
        bound.observations += 1
        if ours >= self.min_learn_tokens:
            bound.ratio = max(bound.ratio, server / ours * (1.0 + self.learn_margin))
        bound.slack = max(bound.slack, server - ours * bound.ratio)

    def learn_from_error(
        self, endpoint_key: str, ours: int, info: ContextErrorInfo, *, max_tokens: int | None = None
    ) -> None:
        """Tighten after a 400 context error for a prompt we counted as ``ours``.

        With the server's prompt count the bound learns it exactly (plus margin);
        with only its total and our ``max_tokens`` it derives the prompt count;
        without counts the ratio grows by ``tighten_factor``. A stated window is
        remembered for the endpoint (see :meth:`window`).
        """
        if info.context_window is not None:
            known = self._windows.get(endpoint_key)
            self._windows[endpoint_key] = min(known, info.context_window) if known else info.context_window
        server = info.server_prompt_tokens
        if server is None and info.requested_tokens is not None and max_tokens is not None:
            server = info.requested_tokens - max_tokens
        bound = self._bound(endpoint_key)
        if server is not None and server > 0 and ours > 0:
            before = self.estimate(endpoint_key, ours)
            bound.ratio = max(bound.ratio, server / ours * (1.0 + self.learn_margin))
            bound.slack = max(bound.slack, server - ours * bound.ratio)
            if self.estimate(endpoint_key, ours) > before:
                return
        # the server said too long but our bound did not move: tighten blindly
        bound.ratio *= self.tighten_factor

    def window(self, endpoint_key: str) -> int | None:
        """A context window the endpoint stated in an error, if any."""
        return self._windows.get(endpoint_key)


class ContextWindows:
    """Resolves the window of a call (see the module doc); a window the endpoint
    stated in an error always caps the result."""

    def __init__(
        self,
        config: IterateConfig | None = None,
        *,
        endpoint_windows: Mapping[str, int] | None = None,
        default_window: int = DEFAULT_WINDOW,
        table: tuple[tuple[str, int], ...] = DEFAULT_WINDOWS,
    ) -> None:
        self.config_window = config.context_window if config is not None else None
        self.endpoint_windows = dict(endpoint_windows or {})
        self.default_window = default_window
        self.table = table

    def window(self, model: str | None, endpoint_key: str, learner: RatioLearner | None = None) -> int:
        if endpoint_key in self.endpoint_windows:
            window = self.endpoint_windows[endpoint_key]
        elif self.config_window is not None:
            window = self.config_window
        else:
            window = context_window_for(model, default=self.default_window, table=self.table)
        stated = learner.window(endpoint_key) if learner is not None else None
        return min(window, stated) if stated is not None else window

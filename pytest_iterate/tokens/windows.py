"""Context windows per model and endpoint, and what a context-length error says.

:func:`context_window_for` looks a model up in :data:`DEFAULT_WINDOWS` by prefix,
case-insensitively, after dropping a provider path (``meta-llama/``) and
punctuation, so ``gpt-4o-mini-2024-07-18``, ``meta-llama/Llama-3.1-8B-Instruct``
and ``llama3.1:8b`` all resolve; the longest matching prefix wins.

:class:`ContextWindows` resolves the window of one call, first match wins:

    per-endpoint override  >  config.context_window  >  the window the endpoint
    stated when probed (``GET /props``, ``max_model_len``, ...; see :mod:`.server`)
    >  the model table  >  the default (4096)

and a smaller window an endpoint stated in a 400 caps all of them.
:func:`parse_context_error` reads the counts out of such a 400 (OpenAI, vLLM,
llama.cpp and llama-cpp-python wordings).

>>> context_window_for("gpt-4o-mini"), context_window_for("meta-llama/Llama-3.1-8B-Instruct")
(128000, 131072)
>>> context_window_for("no-such-model", default=4096)
4096
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from pytest_iterate.client.config import IterateConfig


__all__ = [
    "DEFAULT_WINDOW",
    "DEFAULT_WINDOWS",
    "ContextErrorInfo",
    "ContextWindows",
    "context_window_for",
    "is_context_error_text",
    "normalize_model",
    "parse_context_error",
]

DEFAULT_WINDOW = 4096


class StatedWindows(Protocol):
    """Whatever remembers windows endpoints stated in errors (the learner)."""

    def window(self, endpoint_key: str) -> int | None: ...


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
    "exceed context window",
)
_RE_WINDOW = (
    re.compile(r"maximum context length is (\d+)", re.I),
    re.compile(r"context (?:window|size|length) (?:is|of) (\d+)", re.I),
    re.compile(r'"n_ctx"\s*:\s*(\d+)'),
    re.compile(r"exceed context window of (\d+)", re.I),
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
    re.compile(r"Requested tokens \((\d+)\) exceed", re.I),
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
        self.discovered: dict[str, tuple[int, str]] = {}

    def discover(self, endpoint_key: str, window: int, source: str) -> None:
        """Remember the window ``endpoint_key`` stated when probed (``source`` says where)."""
        if window < 1:
            raise ValueError(f"a discovered window must be >= 1, not {window!r}")
        self.discovered[endpoint_key] = (window, source)

    def source(self, model: str | None, endpoint_key: str) -> str:
        """Where the window of a call comes from (for reports and warnings)."""
        if endpoint_key in self.endpoint_windows:
            return "per-endpoint setting"
        if self.config_window is not None:
            return "config context_window"
        if endpoint_key in self.discovered:
            return f"the endpoint ({self.discovered[endpoint_key][1]})"
        if model and context_window_for(model, default=-1, table=self.table) != -1:
            return "the model table"
        return "the default"

    def window(self, model: str | None, endpoint_key: str, stated: StatedWindows | None = None) -> int:
        if endpoint_key in self.endpoint_windows:
            window = self.endpoint_windows[endpoint_key]
        elif self.config_window is not None:
            window = self.config_window
        elif endpoint_key in self.discovered:
            window = self.discovered[endpoint_key][0]
        else:
            window = context_window_for(model, default=self.default_window, table=self.table)
        said = stated.window(endpoint_key) if stated is not None else None
        return min(window, said) if said is not None else window

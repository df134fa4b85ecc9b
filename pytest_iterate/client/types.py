"""Value types shared by every layer: the request, the response, usage and warnings.

These are the contract between the client, the cache, the token guard, the mock and
the pipeline. Requests are immutable; a layer that changes one (the token guard
truncating it, say) builds a new one with :meth:`LLMRequest.replace`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

__all__ = [
    "Caller",
    "Endpoint",
    "GuardWarning",
    "LLMRequest",
    "LLMResponse",
    "Message",
    "Usage",
]

Endpoint = Literal["chat", "completions"]
Message = Mapping[str, Any]  # {"role": ..., "content": ...}


@dataclass(frozen=True, slots=True)
class LLMRequest:
    """One call to an OpenAI-compatible endpoint.

    ``endpoint="chat"`` uses ``messages``; ``endpoint="completions"`` uses ``prompt``
    (a string, or a list of strings for native batching). ``params`` holds every other
    body field (temperature, top_p, seed, stop, ...): they are sent as they are and
    are part of the cache key unless listed in the cache's deny-list.

    >>> r = LLMRequest(messages=({"role": "user", "content": "hi"},), max_tokens=16)
    >>> r.body("gpt-4o-mini")["max_tokens"]
    16
    """

    messages: tuple[Message, ...] = ()
    prompt: str | tuple[str, ...] | None = None
    endpoint: Endpoint = "chat"
    model: str | None = None  # None: the client's configured model
    max_tokens: int | None = None
    stream: bool = False
    params: Mapping[str, Any] = field(default_factory=dict)

    def replace(self, **changes: Any) -> LLMRequest:
        return dataclasses.replace(self, **changes)

    @property
    def path(self) -> str:
        return "/chat/completions" if self.endpoint == "chat" else "/completions"

    def body(self, default_model: str) -> dict[str, Any]:
        """The JSON body sent to the endpoint."""
        body: dict[str, Any] = {"model": self.model or default_model}
        if self.endpoint == "chat":
            body["messages"] = [dict(m) for m in self.messages]
        else:
            body["prompt"] = list(self.prompt) if isinstance(self.prompt, tuple) else self.prompt
        if self.max_tokens is not None:
            body["max_tokens"] = self.max_tokens
        body.update(self.params)
        if self.stream:
            body["stream"] = True
            body.setdefault("stream_options", {"include_usage": True})
        return body

    @property
    def deterministic(self) -> bool:
        """True when the same request must give the same answer (temperature 0 or a seed)."""
        temperature = self.params.get("temperature", 1.0)
        return self.params.get("seed") is not None or temperature == 0


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> Usage | None:
        if not data:
            return None
        return cls(int(data.get("prompt_tokens") or 0), int(data.get("completion_tokens") or 0))


@dataclass(frozen=True, slots=True)
class GuardWarning:
    """A structured warning attached to a response that is not the whole answer.

    ``action`` is one of ``truncate``, ``split``, ``shrink_output``, ``length``
    (the model stopped at ``max_tokens``), ``no_code`` and the like.
    """

    action: str
    message: str
    tokens_before: int | None = None
    tokens_after: int | None = None
    removed: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}


@dataclass(slots=True)
class LLMResponse:
    """The answer of one (possibly retried, cached or guarded) call.

    Timings are in seconds on the monotonic clock: ``ttft_s`` from send to the first
    content chunk (equal to ``total_s`` for a non-streamed call), ``total_s`` from
    send to the end. ``chunk_times_s`` are arrival offsets of streamed chunks from
    the send, used for inter-token latency and cassettes.
    """

    text: str
    finish_reason: str | None = None
    usage: Usage | None = None
    model: str | None = None
    ttft_s: float | None = None
    total_s: float = 0.0
    attempts: int = 1
    chunks: list[str] = field(default_factory=list)
    chunk_times_s: list[float] = field(default_factory=list)
    cache_tier: str | None = None  # None (not from cache), "memory" or "disk"
    cache_key: str | None = None
    warnings: list[GuardWarning] = field(default_factory=list)
    raw: dict[str, Any] | None = None  # the last JSON body (non-streamed) for callers that need more
    texts: list[str] | None = None  # one text per prompt for a native list-prompt completion
    wire_s: float = 0.0  # time inside HTTP attempts, failed ones included (not the throttle's queue
    # nor the backoff between attempts); 0 for an answer from a cache

    @property
    def partial(self) -> bool:
        """True when something was cut or the model stopped early: see ``warnings``."""
        return bool(self.warnings) or self.finish_reason == "length"

    @property
    def complete(self) -> bool:
        return not self.partial


class Caller(Protocol):
    """One layer of the call stack: takes a request, returns a response.

    The client's raw call, retry, throttle, token guard and cache are each a Caller
    that wraps the next one. ``on_delta`` receives streamed text deltas as they
    arrive (a cache hit replays the stored chunks through it), so a caller that
    streams sees the same API whichever layer answered.
    """

    async def __call__(
        self, request: LLMRequest, /, *, on_delta: Callable[[str], None] | None = None
    ) -> LLMResponse: ...

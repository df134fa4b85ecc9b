"""One record per request the harness sent: :class:`RequestSample`.

All times are seconds on one monotonic clock (the runner's). ``scheduled_s`` is when
the load shape *intended* the request to start; ``start_s`` when it actually did.
Latencies count from the scheduled time, so a client that falls behind (queueing,
a stalled server holding workers) shows up in the latency instead of hiding in a
later send time (no coordinated omission). The gap is reported separately as
scheduling lag. See ``harness/DEFINITIONS.md``.

Adapters turn what the pipeline returns into samples; they are duck-typed so they
work with any object carrying the documented attribute names.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "RequestSample",
    "error_kind_of",
    "sample_from_llm_response",
    "sample_from_pipeline_result",
]


@dataclass(frozen=True, slots=True)
class RequestSample:
    """What one request did, in the runner's clock (seconds).

    Example::

        RequestSample(scheduled_s=1.0, start_s=1.001, first_token_s=1.2, end_s=1.5, ok=True,
                      completion_tokens=20)
    """

    scheduled_s: float
    start_s: float
    end_s: float
    ok: bool = True
    first_token_s: float | None = None
    error_kind: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cache_tier: str | None = None  # None = not served from a cache; "memory" / "disk" = hit
    attempts: int = 1
    stages: dict[str, float] = field(default_factory=dict)  # stage name -> duration (s)
    last_token_s: float | None = None  # arrival of the last token; defaults to end_s
    key: str | None = None  # what was sent (a design id): pairs the same request across two runs

    @property
    def retries(self) -> int:
        """Attempts beyond the first."""
        return max(0, self.attempts - 1)

    @property
    def latency_s(self) -> float:
        """End-to-end latency from the scheduled send time (includes scheduling lag)."""
        return self.end_s - self.scheduled_s

    @property
    def service_s(self) -> float:
        """Latency from the actual send: what a naive closed-loop timer measures."""
        return self.end_s - self.start_s

    @property
    def lag_s(self) -> float:
        """Scheduling lag: actual start minus scheduled start (>= 0 unless clocks skew)."""
        return self.start_s - self.scheduled_s

    @property
    def ttft_s(self) -> float | None:
        """Time to first token from the scheduled send time."""
        return None if self.first_token_s is None else self.first_token_s - self.scheduled_s

    @property
    def itl_s(self) -> float | None:
        """Inter-token latency: (last token - first token) / (n - 1) over n output tokens."""
        if self.first_token_s is None or self.completion_tokens < 2:
            return None
        last = self.last_token_s if self.last_token_s is not None else self.end_s
        return max(0.0, last - self.first_token_s) / (self.completion_tokens - 1)

    @property
    def tpot_s(self) -> float | None:
        """Time per output token: end-to-end latency / output tokens."""
        if self.completion_tokens < 1:
            return None
        return self.latency_s / self.completion_tokens

    @property
    def cache_hit(self) -> bool:
        return self.cache_tier is not None

    def shifted(self, offset: float) -> RequestSample:
        """This sample with ``offset`` seconds added to every time (to another clock or origin)."""
        return dataclasses.replace(
            self,
            scheduled_s=self.scheduled_s + offset,
            start_s=self.start_s + offset,
            end_s=self.end_s + offset,
            first_token_s=None if self.first_token_s is None else self.first_token_s + offset,
            last_token_s=None if self.last_token_s is None else self.last_token_s + offset,
        )

    def to_row(self) -> list[Any]:
        """Every field as a list of plain values (JSON, msgpack): what crosses between processes.

        >>> s = RequestSample(1.0, 1.5, 2.0, stages={"llm_call": 0.4}, key="d1")
        >>> RequestSample.from_row(s.to_row()) == s
        True
        """
        return [
            self.scheduled_s,
            self.start_s,
            self.end_s,
            self.ok,
            self.first_token_s,
            self.error_kind,
            self.prompt_tokens,
            self.completion_tokens,
            self.cache_tier,
            self.attempts,
            dict(self.stages),
            self.last_token_s,
            self.key,
        ]

    @classmethod
    def from_row(cls, row: Sequence[Any]) -> RequestSample:
        """The sample :meth:`to_row` made ``row`` from."""
        if not isinstance(row, Sequence) or len(row) != 13:
            raise ValueError(f"a sample row has 13 values, got {row!r}")
        return cls(
            scheduled_s=float(row[0]),
            start_s=float(row[1]),
            end_s=float(row[2]),
            ok=bool(row[3]),
            first_token_s=None if row[4] is None else float(row[4]),
            error_kind=None if row[5] is None else str(row[5]),
            prompt_tokens=int(row[6]),
            completion_tokens=int(row[7]),
            cache_tier=None if row[8] is None else str(row[8]),
            attempts=int(row[9]),
            stages={str(k): float(v) for k, v in (row[10] or {}).items()},
            last_token_s=None if row[11] is None else float(row[11]),
            key=None if row[12] is None else str(row[12]),
        )


def error_kind_of(error: BaseException | str | None) -> str | None:
    """A low-cardinality label for an error: the exception class name, or the string."""
    if error is None:
        return None
    if isinstance(error, str):
        return error or "error"
    return type(error).__name__


def _usage_tokens(usage: Any) -> tuple[int, int]:
    if usage is None:
        return 0, 0
    if isinstance(usage, Mapping):
        return int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)
    return int(getattr(usage, "prompt_tokens", 0) or 0), int(getattr(usage, "completion_tokens", 0) or 0)


def _stages(stages: Any) -> dict[str, float]:
    """Sum durations per stage name from a list of StageTiming-like objects or a mapping."""
    out: dict[str, float] = {}
    if not stages:
        return out
    if isinstance(stages, Mapping):
        return {str(k): float(v) for k, v in stages.items()}
    for st in stages:
        if isinstance(st, Mapping):
            name, dur = st.get("name"), st.get("duration_s")
        else:
            name, dur = getattr(st, "name", None), getattr(st, "duration_s", None)
        if name is None or dur is None:
            continue
        out[str(name)] = out.get(str(name), 0.0) + float(dur)
    return out


def sample_from_pipeline_result(result: Any, scheduled_s: float, start_s: float) -> RequestSample:
    """Adapt a pipeline result (``ok, error, ttft_s, total_s, usage, cache_tier, attempts,
    stages``) measured from ``start_s``; missing attributes take neutral defaults."""
    total = float(getattr(result, "total_s", 0.0) or 0.0)
    ttft = getattr(result, "ttft_s", None)
    prompt, completion = _usage_tokens(getattr(result, "usage", None))
    ok = bool(getattr(result, "ok", True))
    error = getattr(result, "error", None)
    return RequestSample(
        scheduled_s=scheduled_s,
        start_s=start_s,
        end_s=start_s + total,
        ok=ok,
        first_token_s=None if ttft is None else start_s + float(ttft),
        error_kind=None if ok else (error_kind_of(error) or "error"),
        prompt_tokens=prompt,
        completion_tokens=completion,
        cache_tier=getattr(result, "cache_tier", None),
        attempts=int(getattr(result, "attempts", 1) or 1),
        stages=_stages(getattr(result, "stages", None)),
    )


def sample_from_llm_response(
    response: Any, scheduled_s: float, start_s: float, end_s: float | None = None
) -> RequestSample:
    """Adapt an :class:`~pytest_iterate.client.types.LLMResponse` (ttft_s, total_s,
    chunk_times_s relative to ``start_s``). ``end_s`` overrides ``start_s + total_s``."""
    total = float(getattr(response, "total_s", 0.0) or 0.0)
    end = end_s if end_s is not None else start_s + total
    ttft = getattr(response, "ttft_s", None)
    chunk_times = list(getattr(response, "chunk_times_s", None) or [])
    prompt, completion = _usage_tokens(getattr(response, "usage", None))
    if completion == 0 and chunk_times:
        completion = len(chunk_times)
    return RequestSample(
        scheduled_s=scheduled_s,
        start_s=start_s,
        end_s=end,
        ok=True,
        first_token_s=None if ttft is None else start_s + float(ttft),
        prompt_tokens=prompt,
        completion_tokens=completion,
        cache_tier=getattr(response, "cache_tier", None),
        attempts=int(getattr(response, "attempts", 1) or 1),
        last_token_s=start_s + chunk_times[-1] if chunk_times else None,
    )

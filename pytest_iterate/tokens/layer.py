"""GuardingCaller: the token guard as one layer of the call stack.

For each call it applies the :class:`~.guard.TokenGuard` (policy per call or
per layer), then

- sends the guarded request, or each piece of a split request in order, joining
  the answers with ``joiner`` (streamed deltas get the same joiner between parts);
- after every success feeds ``usage.prompt_tokens`` back to the learner, so a
  server that counts more than cl100k raises the bound for the next request;
- on a 400 that says the context was exceeded (``HTTPStatusError.code`` such as
  ``context_length_exceeded``, or a message about the context length) learns from
  the counts it states and retries ONCE with the tighter bound (so the retry is cut
  further, or refused under ``refuse``); a second such error raises
  :class:`ContextOverflow` with the counts;
- attaches the guard's warnings to the response and flags ``finish_reason ==
  "length"``.

It never sends a request that the guard's check says does not fit: pieces of a
split are checked again just before they are sent, since the bound may have
tightened after the earlier pieces.
"""

from __future__ import annotations

from collections.abc import Callable

from pytest_iterate.client.errors import ContextOverflow, HTTPStatusError
from pytest_iterate.client.types import Caller, GuardWarning, LLMRequest, LLMResponse, Usage
from pytest_iterate.tokens.guard import GuardDecision, GuardedRequest, TokenGuard
from pytest_iterate.tokens.windows import is_context_error_text, parse_context_error

__all__ = ["GuardingCaller", "is_context_error"]

OnDelta = Callable[[str], None]


def is_context_error(exc: HTTPStatusError) -> bool:
    """True for a 4xx that says the prompt + max_tokens exceeded the context window."""
    if not 400 <= exc.status < 500 or exc.status == 429:
        return False
    text = f"{exc.code or ''} {exc} {exc.body.decode('utf-8', errors='replace')}"
    return is_context_error_text(text)


class GuardingCaller:
    """A :class:`~pytest_iterate.client.types.Caller` that guards token limits."""

    def __init__(
        self,
        inner: Caller,
        guard: TokenGuard,
        *,
        endpoint_key: str = "default",
        policy: str | None = None,
        joiner: str = "\n\n",
    ) -> None:
        self.inner = inner
        self.guard = guard
        self.endpoint_key = endpoint_key
        self.policy = policy
        self.joiner = joiner

    async def __call__(
        self, request: LLMRequest, /, *, on_delta: OnDelta | None = None, policy: str | None = None
    ) -> LLMResponse:
        guarded = self.guard.apply(request, policy=policy or self.policy, endpoint_key=self.endpoint_key)
        return await self._run(guarded, on_delta, policy or self.policy, retry=True)

    async def _run(
        self, guarded: GuardedRequest, on_delta: OnDelta | None, policy: str | None, *, retry: bool
    ) -> LLMResponse:
        if len(guarded.requests) == 1:
            only, decided = guarded.requests[0], guarded.decisions[0]
            response = await self._send(only, decided, on_delta, policy, retry=retry)
        else:
            parts: list[LLMResponse] = []
            planned = zip(guarded.requests, guarded.decisions, strict=True)
            for index, (request, decision) in enumerate(planned):
                if index and on_delta is not None:
                    on_delta(self.joiner)
                if index:  # the bound may have tightened since the split was planned
                    decision = self.guard.check(request, endpoint_key=self.endpoint_key)
                parts.append(await self._send(request, decision, on_delta, policy, retry=retry))
            response = self._join(parts)
        response.warnings[:0] = guarded.warnings
        return self.guard.flag_length(response)

    async def _send(
        self,
        request: LLMRequest,
        decision: GuardDecision,
        on_delta: OnDelta | None,
        policy: str | None,
        *,
        retry: bool,
    ) -> LLMResponse:
        if not decision.fits:  # planned under a looser bound: guard it again
            regarded = self.guard.apply(request, policy=policy, endpoint_key=self.endpoint_key)
            return await self._run(regarded, on_delta, policy, retry=retry)
        try:
            response = await self.inner(request, on_delta=on_delta)
        except HTTPStatusError as exc:
            if not is_context_error(exc):
                raise
            text = f"{exc} {exc.body.decode('utf-8', errors='replace')}"
            info = parse_context_error(text)
            self.guard.learner.learn_from_error(
                self.endpoint_key, decision.prompt_tokens, info, max_tokens=decision.max_tokens
            )
            if not retry:
                self.guard.count_action("refuse")
                raise ContextOverflow(
                    f"{self.endpoint_key!r} still rejected the request as too long after one retry "
                    f"(counted {decision.prompt_tokens} prompt tokens, max_tokens "
                    f"{decision.max_tokens}): {exc}",
                    prompt_tokens=info.server_prompt_tokens or decision.estimated_prompt_tokens,
                    max_tokens=decision.max_tokens,
                    context_window=info.context_window or decision.context_window,
                ) from exc
            self.guard.count_action("retry")
            regarded = self.guard.apply(request, policy=policy, endpoint_key=self.endpoint_key)
            response = await self._run(regarded, on_delta, policy, retry=False)
            response.warnings.insert(
                0,
                GuardWarning(
                    "retry",
                    "the endpoint rejected the prompt as too long; learned its count and retried once",
                    tokens_before=decision.estimated_prompt_tokens,
                    tokens_after=self.guard.learner.estimate(self.endpoint_key, decision.prompt_tokens),
                ),
            )
            return response
        usage = response.usage
        if usage is not None and usage.prompt_tokens > 0 and response.cache_tier is None:
            self.guard.learner.observe(self.endpoint_key, decision.total_prompt_tokens, usage.prompt_tokens)
        return response

    def _join(self, parts: list[LLMResponse]) -> LLMResponse:
        first, last = parts[0], parts[-1]
        chunks: list[str] = []
        times: list[float] = []
        offset = 0.0
        for index, part in enumerate(parts):
            if index:
                chunks.append(self.joiner)
                times.append(offset)
            chunks.extend(part.chunks)
            times.extend(offset + t for t in part.chunk_times_s)
            offset += part.total_s
        usages = [p.usage for p in parts if p.usage is not None]
        warnings = [w for p in parts for w in p.warnings]
        return LLMResponse(
            text=self.joiner.join(p.text for p in parts),
            finish_reason="length" if any(p.finish_reason == "length" for p in parts) else last.finish_reason,
            usage=Usage(sum(u.prompt_tokens for u in usages), sum(u.completion_tokens for u in usages))
            if usages
            else None,
            model=first.model,
            ttft_s=first.ttft_s,
            total_s=offset,
            attempts=sum(p.attempts for p in parts),
            chunks=chunks if any(p.chunks for p in parts) else [],
            chunk_times_s=times if any(p.chunk_times_s for p in parts) else [],
            warnings=warnings,
        )

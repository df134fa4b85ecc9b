"""GuardingCaller: the token guard as one layer of the call stack (a :class:`Caller`).

A user wraps a client (and may wrap the result in a ``CachingCaller``)::

    caller = GuardingCaller(client, TokenGuard(config), endpoint_key=client.base_url)
    answer = await caller(request)          # answer.warnings says what was cut

:class:`~pytest_iterate.pipeline.runner.Pipeline` builds this same layer and runs its
two phases as separate stages, so each is timed on its own; ``__call__`` is just
the two phases in a row:

:meth:`plan`  (stage ``token_guard``) apply the :class:`~.guard.TokenGuard` with
              the policy (per call, else per layer, else the config's): the
              request as it is when it fits, else truncated, split into pieces or
              with a smaller ``max_tokens``; under ``refuse``, or when nothing
              fits, :class:`ContextOverflow` before anything is sent. The result
              is a :class:`GuardPlan`.
:meth:`send`  (stage ``llm_call``, inside the cache's single flight) send the plan:

- the guarded request, or each piece of a split in order, joining the answers with
  ``joiner`` (streamed deltas get the same joiner between parts). Pieces after the
  first are checked again just before they are sent, since the bound may have
  tightened after the earlier ones: it never sends a request that the guard's check
  says does not fit;
- after every success, feed ``usage.prompt_tokens`` back to the learner (answers
  that did not come from a cache only), so a server that counts more than cl100k
  raises the bound for the next request;
- on a 4xx that says the context was exceeded (``HTTPStatusError.code`` such as
  ``context_length_exceeded``, or a message about the context length) learn from
  the counts it states and retry ONCE with the tighter bound (so the retry is cut
  further, or refused under ``refuse``); a second such error raises
  :class:`ContextOverflow` with the counts;
- put the guard's warnings first in the response's, and flag ``finish_reason ==
  "length"`` with a ``length`` warning.

``GuardPlan.sends`` counts the requests handed to the layer below (a failed one
too): the pipeline reports it as ``llm_calls``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from pytest_iterate.client.errors import ContextOverflow, HTTPStatusError
from pytest_iterate.client.types import Caller, GuardWarning, LLMRequest, LLMResponse, Usage
from pytest_iterate.tokens.guard import GuardDecision, GuardedRequest, TokenGuard
from pytest_iterate.tokens.windows import is_context_error_text, parse_context_error

__all__ = ["GuardPlan", "GuardingCaller", "is_context_error"]

OnDelta = Callable[[str], None]


def is_context_error(exc: HTTPStatusError) -> bool:
    """True for a 4xx that says the prompt + max_tokens exceeded the context window."""
    if not 400 <= exc.status < 500 or exc.status == 429:
        return False
    text = f"{exc.code or ''} {exc} {exc.body.decode('utf-8', errors='replace')}"
    return is_context_error_text(text)


@dataclass(slots=True)
class GuardPlan:
    """One request as the guard planned it (:meth:`GuardingCaller.plan`), and its sends.

    ``guarded`` holds what to send (``guarded.requests``, one unless split), the
    checks behind it and the guard's warnings (``guarded.warnings``); ``policy`` the
    policy it was planned under (None: the guard's default); ``sends`` the requests
    :meth:`GuardingCaller.send` handed to the layer below so far.
    """

    request: LLMRequest
    guarded: GuardedRequest
    policy: str | None
    sends: int = 0

    @property
    def warnings(self) -> list[GuardWarning]:
        return self.guarded.warnings


class GuardingCaller:
    """A :class:`~pytest_iterate.client.types.Caller` that guards token limits.

    ``endpoint_key`` names the endpoint for the learner and the per-endpoint windows
    (the pipeline uses the client's base URL).
    """

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
        return await self.send(self.plan(request, policy=policy), on_delta=on_delta)

    # -- the phases -------------------------------------------------------------------
    def plan(self, request: LLMRequest, *, policy: str | None = None) -> GuardPlan:
        """What to send for ``request``; raises :class:`ContextOverflow` when nothing may be sent."""
        chosen = policy or self.policy
        guarded = self.guard.apply(request, policy=chosen, endpoint_key=self.endpoint_key)
        return GuardPlan(request, guarded, chosen)

    async def send(self, plan: GuardPlan, *, on_delta: OnDelta | None = None) -> LLMResponse:
        """Send ``plan`` to the layer below: the answer (joined when split), flagged and warned."""
        return await self._run(plan, plan.guarded, on_delta, retry=True)

    # -- internals --------------------------------------------------------------------
    async def _run(
        self, plan: GuardPlan, guarded: GuardedRequest, on_delta: OnDelta | None, *, retry: bool
    ) -> LLMResponse:
        if len(guarded.requests) == 1:
            only, decided = guarded.requests[0], guarded.decisions[0]
            response = await self._send(plan, only, decided, on_delta, retry=retry)
        else:
            parts: list[LLMResponse] = []
            planned = zip(guarded.requests, guarded.decisions, strict=True)
            for index, (request, decision) in enumerate(planned):
                if index and on_delta is not None:
                    on_delta(self.joiner)
                if index:  # the bound may have tightened since the split was planned
                    decision = self.guard.check(request, endpoint_key=self.endpoint_key)
                parts.append(await self._send(plan, request, decision, on_delta, retry=retry))
            response = self._join(parts)
        response.warnings[:0] = guarded.warnings
        return self.guard.flag_length(response)

    async def _send(
        self,
        plan: GuardPlan,
        request: LLMRequest,
        decision: GuardDecision,
        on_delta: OnDelta | None,
        *,
        retry: bool,
    ) -> LLMResponse:
        if not decision.fits:  # planned under a looser bound: guard it again
            regarded = self.guard.apply(request, policy=plan.policy, endpoint_key=self.endpoint_key)
            return await self._run(plan, regarded, on_delta, retry=retry)
        plan.sends += 1  # counted when sent, so a failed call counts too
        try:
            response = await self.inner(request, on_delta=on_delta)
        except HTTPStatusError as exc:
            if not is_context_error(exc):
                raise
            return await self._after_context_error(plan, request, decision, exc, on_delta, retry=retry)
        usage = response.usage
        if usage is not None and usage.prompt_tokens > 0 and response.cache_tier is None:
            self.guard.learner.observe(self.endpoint_key, decision.total_prompt_tokens, usage.prompt_tokens)
        return response

    async def _after_context_error(
        self,
        plan: GuardPlan,
        request: LLMRequest,
        decision: GuardDecision,
        exc: HTTPStatusError,
        on_delta: OnDelta | None,
        *,
        retry: bool,
    ) -> LLMResponse:
        """Learn from the endpoint's 'too long', then retry once with the tighter bound."""
        text = f"{exc} {exc.body.decode('utf-8', errors='replace')}"
        info = parse_context_error(text)
        learner = self.guard.learner
        learner.learn_from_error(
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
        regarded = self.guard.apply(request, policy=plan.policy, endpoint_key=self.endpoint_key)
        response = await self._run(plan, regarded, on_delta, retry=False)
        response.warnings.insert(
            0,
            GuardWarning(
                "retry",
                "the endpoint rejected the prompt as too long; learned its count and retried once",
                tokens_before=decision.estimated_prompt_tokens,
                tokens_after=learner.estimate(self.endpoint_key, decision.prompt_tokens),
            ),
        )
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
            wire_s=sum(p.wire_s for p in parts),
            attempts=sum(p.attempts for p in parts),
            chunks=chunks if any(p.chunks for p in parts) else [],
            chunk_times_s=times if any(p.chunk_times_s for p in parts) else [],
            warnings=warnings,
        )

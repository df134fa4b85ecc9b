"""GuardingCaller: the token guard as one layer of the call stack (a :class:`Caller`).

A user wraps a client (and may wrap the result in a ``CachingCaller``)::

    caller = GuardingCaller.for_client(client, TokenGuard(config))
    answer = await caller(request)          # answer.warnings says what was cut

``for_client`` keys the layer by the client's base URL and lets it probe the
endpoint once through the client's own transport (:mod:`.server`): the window the
endpoint states, and a tokenize route for exact counts. ``GuardingCaller(inner,
guard, endpoint_key=...)`` over any Caller probes nothing and bounds every prompt
with the per-script estimate (:mod:`.bounds`).

:class:`~pytest_iterate.pipeline.runner.Pipeline` builds this same layer and runs its
two phases as separate stages, so each is timed on its own; ``__call__`` is just
the two phases in a row:

:meth:`plan`  (stage ``token_guard``) on the endpoint's first request, the probe
              (concurrent first requests share it); where the endpoint offers exact
              counts and the bound does not fit with room to spare
              (:meth:`~.guard.GuardDecision.clearly_fits`: no count could change the
              answer), the exact counts of the request's texts (cached by digest, sent
              together); then the :class:`~.guard.TokenGuard` with the policy (per
              call, else per layer, else the config's): the request as it is when it
              fits, else truncated, split into pieces or with a smaller
              ``max_tokens``. Every text a cut produced is then counted exactly and
              the result checked again; a piece still over makes the guard plan
              again with what it learned (three rounds at most). Under ``refuse``, or
              when nothing fits, :class:`ContextOverflow` before anything is sent.
              The result is a :class:`GuardPlan`.
:meth:`send`  (stage ``llm_call``, inside the cache's single flight) send the plan:

- the guarded request, or each piece of a split in order, joining the answers with
  ``joiner`` (streamed deltas get the same joiner between parts). Pieces after the
  first are checked again just before they are sent, since the bound may have
  tightened after the earlier ones: it never sends a request that the guard's check
  says does not fit;
- after every success, feed ``usage.prompt_tokens`` back to the per-script learner
  and, when the contents were counted exactly, to the chat template's overhead for
  this model and shape of prompt (answers that did not come from a cache only);
- on a 4xx that says the context was exceeded (``HTTPStatusError.code`` such as
  ``context_length_exceeded``, or a message about the context length) learn from
  the counts it states and retry ONCE with the tighter bound (so the retry is cut
  further, or refused under ``refuse``); a second such error raises
  :class:`ContextOverflow` with the counts;
- put the guard's warnings first in the response's, and flag ``finish_reason ==
  "length"`` with a ``length`` warning.

``GuardPlan.sends`` counts the requests handed to the layer below (a failed one
too): the pipeline reports it as ``llm_calls``; ``GuardingCaller.context_errors``
counts the context-length errors the endpoint answered (each retried once).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pytest_iterate.client.errors import ContextOverflow, HTTPStatusError
from pytest_iterate.client.types import Caller, GuardWarning, LLMRequest, LLMResponse, Usage
from pytest_iterate.tokens.guard import GuardDecision, GuardedRequest, TokenGuard, request_texts
from pytest_iterate.tokens.server import CountError, EndpointTokens, ServerTokens, TransportHTTP
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


_VERIFY_ROUNDS = 3


class GuardingCaller:
    """A :class:`~pytest_iterate.client.types.Caller` that guards token limits.

    ``endpoint_key`` names the endpoint for the learner and the per-endpoint windows
    (the pipeline uses the client's base URL); ``tokens`` is the endpoint's probe
    and exact counter (:meth:`for_client` builds it; None: estimates only).
    """

    def __init__(
        self,
        inner: Caller,
        guard: TokenGuard,
        *,
        endpoint_key: str = "default",
        policy: str | None = None,
        joiner: str = "\n\n",
        tokens: EndpointTokens | None = None,
    ) -> None:
        self.inner = inner
        self.guard = guard
        self.endpoint_key = endpoint_key
        self.policy = policy
        self.joiner = joiner
        self.tokens = tokens
        self.context_errors = 0
        self._announced = False

    @classmethod
    def for_client(
        cls,
        client: Any,
        guard: TokenGuard,
        *,
        policy: str | None = None,
        joiner: str = "\n\n",
        counting: str | None = None,
    ) -> GuardingCaller:
        """The layer over an ``LLMClient`` (its ``call``), keyed by its base URL, probing it.

        ``counting`` is ``"auto"`` (probe the endpoint; exact counts where it offers
        them) or ``"estimate"`` (never probe); None: ``client.config.token_counting``.
        """
        config = client.config
        base_url = str(client.base_url)
        tokens = EndpointTokens(
            TransportHTTP.for_client(client),
            base_url,
            model=str(client.model),
            mode=counting or config.token_counting,
            count_timeout_s=config.request_timeout_s,
            learner=guard.learner,
            counter=guard.counter,
            endpoint_key=base_url,
        )
        inner: Caller = client.call
        return cls(inner, guard, endpoint_key=base_url, policy=policy, joiner=joiner, tokens=tokens)

    async def __call__(
        self, request: LLMRequest, /, *, on_delta: OnDelta | None = None, policy: str | None = None
    ) -> LLMResponse:
        return await self.send(await self.plan(request, policy=policy), on_delta=on_delta)

    # -- the phases -------------------------------------------------------------------
    async def plan(self, request: LLMRequest, *, policy: str | None = None) -> GuardPlan:
        """What to send for ``request``; raises :class:`ContextOverflow` when nothing may be sent."""
        chosen = policy or self.policy
        guarded = await self._guard(request, chosen)
        return GuardPlan(request, guarded, chosen)

    async def send(self, plan: GuardPlan, *, on_delta: OnDelta | None = None) -> LLMResponse:
        """Send ``plan`` to the layer below: the answer (joined when split), flagged and warned."""
        return await self._run(plan, plan.guarded, on_delta, retry=True)

    # -- exact counts -----------------------------------------------------------------
    async def server(self) -> ServerTokens | None:
        """The endpoint's exact counter after its one probe (None: estimates only).

        The first call probes; the window the endpoint stated goes to the guard's
        :class:`~.windows.ContextWindows` (a configured window still wins).
        """
        if self.tokens is None:
            return None
        if not self.tokens.probed:
            # the encoding loads once, blocking the loop: load it before the first await, so that
            # concurrent first requests waiting on the probe are not all charged for it
            _ = self.guard.counter.encoding
        server = await self.tokens.ready()
        if not self._announced and self.tokens.info is not None:
            self._announced = True
            info = self.tokens.info
            if info.kind is not None or info.route is not None:
                self.guard.learner.assume_open(self.endpoint_key)  # not OpenAI's tokenizer
            if info.window is not None:
                self.guard.windows.discover(self.endpoint_key, info.window, info.window_source or "probe")
            if info.prompt_limit is not None:
                self.guard.prompt_limits[self.endpoint_key] = info.prompt_limit
        return server

    def _live_server(self) -> ServerTokens | None:
        server = self.tokens.server if self.tokens is not None else None
        return server if server is not None and server.active else None

    async def _guard(self, request: LLMRequest, policy: str | None) -> GuardedRequest:
        """The guard's plan, with exact counts where the endpoint offers them (see :meth:`plan`)."""
        server = await self.server()
        key = self.endpoint_key
        if server is not None:
            first = self.guard.check(request, endpoint_key=key, server=server)
            if first.clearly_fits():  # no count could change the answer
                return GuardedRequest(request, [], "none", (request,), (first,))
            try:  # near or over the window: the endpoint's own count decides
                await server.count_many(request_texts(request))
            except CountError:
                server = None  # this request is bounded by the estimate
        guarded = self.guard.apply(request, policy=policy, endpoint_key=key, server=server)
        if server is None or guarded.action == "none" or guarded.action == "shrink_output":
            return guarded  # counted exactly already, or nothing to count
        for _ in range(_VERIFY_ROUNDS):  # what a cut produced is new text: count it before it is sent
            try:
                await server.count_many(t for r in guarded.requests for t in request_texts(r))
            except CountError:
                return guarded  # the estimated bounds it was planned with stand
            decisions = tuple(self.guard.check(r, endpoint_key=key, server=server) for r in guarded.requests)
            if all(d.fits for d in decisions):
                return dataclasses.replace(guarded, decisions=decisions)
            # a cut was estimated too small for this server: plan again, the learner knows it now
            guarded = self.guard.apply(request, policy=policy, endpoint_key=key, server=server)
        self.guard.count_action("refuse")
        first = self.guard.check(request, endpoint_key=key, server=server)
        raise ContextOverflow(
            f"{key!r}: the guard's cuts were still over the window by the endpoint's own count after "
            f"{_VERIFY_ROUNDS} rounds (prompt {first.estimated_prompt_tokens} tokens, max_tokens "
            f"{first.max_tokens}, window {first.context_window})",
            prompt_tokens=first.estimated_prompt_tokens,
            max_tokens=first.max_tokens,
            context_window=first.context_window,
        )

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
                    decision = self.guard.check(
                        request, endpoint_key=self.endpoint_key, server=self._live_server()
                    )
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
            regarded = await self._guard(request, plan.policy)
            return await self._run(plan, regarded, on_delta, retry=retry)
        plan.sends += 1  # counted when sent, so a failed call counts too
        try:
            response = await self.inner(request, on_delta=on_delta)
        except HTTPStatusError as exc:
            if not is_context_error(exc):
                raise
            # every refusal for length counts, whatever repairs it afterwards: a request sent
            # over the window is a failure for a user paying for it or rate-limited by it
            self.guard.count_action("rejected")
            return await self._after_context_error(plan, request, decision, exc, on_delta, retry=retry)
        usage = response.usage
        if usage is not None and usage.prompt_tokens > 0 and response.cache_tier is None:
            self._learn(decision, usage.prompt_tokens)
        return response

    def _learn(self, decision: GuardDecision, server_prompt_tokens: int) -> None:
        """The server counted ``server_prompt_tokens`` for the prompt ``decision`` checked."""
        self.guard.learner.observe(self.endpoint_key, decision.profile, server_prompt_tokens, decision.model)
        server = self._live_server()
        if server is not None and decision.content_tokens is not None and decision.roles:
            server.learn_template(
                decision.model, decision.roles, server_prompt_tokens - decision.content_tokens
            )

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
        self.context_errors += 1
        text = f"{exc} {exc.body.decode('utf-8', errors='replace')}"
        info = parse_context_error(text)
        learner = self.guard.learner
        learner.learn_from_error(
            self.endpoint_key, decision.profile, info, max_tokens=decision.max_tokens, model=decision.model
        )
        stated = info.server_prompt_tokens
        server = self._live_server()
        if stated is not None and server is not None and decision.content_tokens is not None:
            server.learn_template(decision.model, decision.roles, stated - decision.content_tokens)
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
        regarded = await self._guard(request, plan.policy)
        response = await self._run(plan, regarded, on_delta, retry=False)
        after = self.guard.check(request, endpoint_key=self.endpoint_key, server=self._live_server())
        response.warnings.insert(
            0,
            GuardWarning(
                "retry",
                "the endpoint rejected the prompt as too long; learned its count and retried once",
                tokens_before=decision.estimated_prompt_tokens,
                tokens_after=after.estimated_prompt_tokens,
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

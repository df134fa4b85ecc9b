"""The token guard: check a request against the context window and apply a policy.

A request *fits* when ``bound(prompt) + max_tokens <= window`` (and the prompt is
within the endpoint's prompt limit, when it states one), where ``bound`` is an
upper bound of the server's own count and ``max_tokens`` is the request's, or
``config.default_max_tokens`` when it has none. The bound is the server's exact
count where the endpoint offers one and the caller fetched it (``server``: a
:class:`~.server.ServerTokens`): the exact counts of the contents plus the chat
template's learned overhead for this shape of prompt (one token per message of
slack for merges across a boundary). Whatever is not counted exactly (any text
before the fetch, every text a cut produces) is bounded by the per-script estimate
(:class:`~.bounds.ScriptLearner`), so cutting never needs the server; the caller
counts the result exactly before it is sent (:class:`~.layer.GuardingCaller`).
When it does not fit, the policy (per call, else ``config.token_policy``) decides:

``truncate``       drop the oldest non-system messages (an assistant turn with its
                   tool answers together), then cut the middle of the last user turn
                   with a marker, and only as a last resort the middle of the system
                   prompt. The system prompt and the last user turn stay intact
                   whenever they fit. A completions prompt is cut in the middle.
``shrink_output``  lower ``max_tokens`` to the room left, but not below
                   ``min_output_tokens``; refuse if even that does not fit.
``split``          cut the last user turn (or the completions prompt) into pieces
                   that each fit, in order: the exact substrings of the input, so
                   their concatenation is the input (no separators are added). Older
                   non-system messages are dropped first when the room for a piece
                   would be below ``min_chunk_tokens``. The caller runs the pieces in
                   order and joins the answers (:class:`~.layer.GuardingCaller`).
``refuse``         raise :class:`ContextOverflow` with the counts.

Every action is counted in ``iterate_token_guard_actions_total{action}`` and every
cut is described by a :class:`GuardWarning` (tokens before and after, what was
removed). A guarded request is verified again before it is handed out: the guard
never returns a request that does not fit.
"""

from __future__ import annotations

import bisect
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pytest_iterate.client.errors import ConfigError, ContextOverflow
from pytest_iterate.client.types import GuardWarning, LLMRequest, LLMResponse, Message
from pytest_iterate.tokens.bounds import ScriptLearner
from pytest_iterate.tokens.counter import REPLY_PRIMING, TokenCounter
from pytest_iterate.tokens.scripts import ScriptProfile
from pytest_iterate.tokens.windows import ContextWindows

if TYPE_CHECKING:
    from pytest_iterate.client.config import IterateConfig
    from pytest_iterate.client.metrics import IterateMetrics
    from pytest_iterate.tokens.server import ServerTokens

__all__ = [
    "POLICIES",
    "GuardDecision",
    "GuardedRequest",
    "TokenGuard",
    "content_texts",
    "cut_marker",
    "request_texts",
]

POLICIES = ("truncate", "split", "shrink_output", "refuse")
_SYSTEM_ROLES = frozenset({"system", "developer"})
_COMPLETION_OVERHEAD = 1  # a completions prompt may get a BOS token the text count does not hold
_CUT_ROUNDS = 6


def cut_marker(removed_tokens: int) -> str:
    """The text put where the middle of a message was cut."""
    return f"\n[... {removed_tokens} tokens cut by the token guard ...]\n"


@dataclass(frozen=True, slots=True)
class GuardDecision:
    """Whether a request fits, with the counts behind the answer.

    ``prompt_tokens`` is our cl100k count (of the largest prompt of a list),
    ``estimated_prompt_tokens`` the bound of the server's count (exact when
    ``exact``; ``estimated_tokens`` is the part of it that is an estimate),
    ``profile`` our count per script of all prompts (what
    ``usage.prompt_tokens`` sums), ``content_tokens`` the server's exact count of
    the chat contents when every one was counted (the template's overhead is
    learned from it), ``roles`` the shape of the chat prompt.
    """

    fits: bool
    prompt_tokens: int
    estimated_prompt_tokens: int
    max_tokens: int
    context_window: int
    endpoint_key: str
    total_prompt_tokens: int
    exact: bool = False
    estimated_tokens: int = 0  # the part of estimated_prompt_tokens that is not an exact count
    profile: ScriptProfile = field(default_factory=ScriptProfile.empty)
    content_tokens: int | None = None
    roles: tuple[str, ...] = ()
    prompt_limit: int | None = None
    model: str | None = None

    @property
    def available(self) -> int:
        """Room left for the output."""
        return self.context_window - self.estimated_prompt_tokens

    @property
    def overflow(self) -> int:
        return self.estimated_prompt_tokens + self.max_tokens - self.context_window

    def clearly_fits(self, headroom: float = 0.05) -> bool:
        """Fits even if the estimated part of the bound were ``headroom`` larger still: no
        exact count could change the answer, so none is worth a round trip."""
        if not self.fits:
            return False
        extra = math.ceil(self.estimated_tokens * headroom)
        return self.estimated_prompt_tokens + extra <= self.room(self.max_tokens)

    def room(self, max_tokens: int) -> int:
        """The largest prompt bound that leaves ``max_tokens`` for the output."""
        room = self.context_window - max_tokens
        return min(room, self.prompt_limit) if self.prompt_limit is not None else room


@dataclass(frozen=True, slots=True)
class GuardedRequest:
    """The outcome of :meth:`TokenGuard.apply`.

    ``action`` is ``"none"``, ``"truncate"``, ``"shrink_output"`` or ``"split"``.
    ``requests`` are the requests to send in order (one, unless split) and
    ``decisions`` their checks; ``request`` is the first of them.
    """

    request: LLMRequest
    warnings: list[GuardWarning]
    action: str
    requests: tuple[LLMRequest, ...] = ()
    decisions: tuple[GuardDecision, ...] = field(default=())

    @property
    def split(self) -> bool:
        return len(self.requests) > 1


class _Measure:
    """Bounds of the server's count for one endpoint and model: exact where known, else estimated.

    Profiles of texts are kept for the life of one check or cut, so a message is
    profiled once however often a cut re-measures the prompt.
    """

    def __init__(
        self, guard: TokenGuard, endpoint_key: str, model: str | None, server: ServerTokens | None
    ) -> None:
        self.counter = guard.counter
        self.learner = guard.learner
        self.endpoint_key = endpoint_key
        self.model = model
        self.server = server
        self._profiles: dict[str, ScriptProfile] = {}

    def profile(self, text: str, *, cached: bool = False) -> ScriptProfile:
        found = self._profiles.get(text)
        if found is None:
            found = self.counter.profile_cached(text) if cached else self.counter.profile_recent(text)
            self._profiles[text] = found
        return found

    def exact(self, text: str) -> int | None:
        return self.server.known(text) if self.server is not None else None

    def estimate(self, profile: ScriptProfile) -> int:
        return self.learner.estimate(self.endpoint_key, profile, self.model) if profile.total else 0

    def text(self, text: str) -> int:
        """Bound of one text alone (a piece, a cut candidate)."""
        exact = self.exact(text)
        return exact if exact is not None else self.estimate(self.profile(text))

    def _parts(self, content: Any) -> list[str]:
        return content_texts(content)

    def chat(self, messages: Sequence[Message]) -> tuple[int, int, int | None]:
        """(bound, the part of it that is an estimate, the exact count of the contents or None)."""
        exact_sum = 0
        all_exact = True
        rest = ScriptProfile.empty()
        for message in messages:
            cached = message.get("role") in _SYSTEM_ROLES
            for part in self._parts(message.get("content")):
                known = self.exact(part)
                if known is None:
                    all_exact = False
                    rest += self.profile(part, cached=cached)
                else:
                    exact_sum += known
        roles = tuple(str(m.get("role", "")) for m in messages)
        overhead = self.server.template(self.model, roles) if self.server is not None else None
        content = exact_sum if all_exact and self.server is not None else None
        if overhead is None:
            template = REPLY_PRIMING + sum(self.counter.message_template(m, self.model) for m in messages)
            estimated = self.estimate(rest.with_template(template))
            return exact_sum + estimated, estimated, content
        estimated = self.estimate(rest)
        return exact_sum + estimated + overhead + len(messages), estimated, content

    def completion(self, prompt: str) -> tuple[int, int]:
        """(bound, the part of it that is an estimate) of a completions prompt."""
        known = self.exact(prompt)
        if known is not None:
            return known + _COMPLETION_OVERHEAD, 0
        estimated = self.estimate(self.profile(prompt).with_template(_COMPLETION_OVERHEAD))
        return estimated, estimated


class TokenGuard:
    """Checks requests against context windows and applies truncate/split/shrink/refuse."""

    def __init__(
        self,
        config: IterateConfig | None = None,
        metrics: IterateMetrics | None = None,
        counter: TokenCounter | None = None,
        learner: ScriptLearner | None = None,
        *,
        windows: ContextWindows | None = None,
        endpoint_windows: Mapping[str, int] | None = None,
        default_window: int = 4096,
        min_output_tokens: int = 16,
        min_chunk_tokens: int = 64,
    ) -> None:
        self.config = config
        self.metrics = metrics
        self.counter = counter or TokenCounter()
        if learner is None:
            learner = ScriptLearner.from_config(config) if config is not None else ScriptLearner()
        self.learner = learner
        self.windows = windows or ContextWindows(
            config, endpoint_windows=endpoint_windows, default_window=default_window
        )
        self.prompt_limits: dict[str, int] = {}  # endpoint -> the most prompt tokens it takes (TGI)
        self.default_max_tokens = config.default_max_tokens if config is not None else 512
        self.default_policy = config.token_policy if config is not None else "truncate"
        self.default_model = config.model if config is not None else None
        self.min_output_tokens = min_output_tokens
        self.min_chunk_tokens = min_chunk_tokens

    # -- counting ----------------------------------------------------------------------
    def model_of(self, request: LLMRequest) -> str | None:
        return request.model or self.default_model

    def _measure(self, request: LLMRequest, endpoint_key: str, server: ServerTokens | None) -> _Measure:
        return _Measure(self, endpoint_key, self.model_of(request), server)

    def profile(self, request: LLMRequest) -> ScriptProfile:
        """Our count of all prompts of ``request`` per script (the chat format as ``template``)."""
        if request.endpoint == "chat":
            return self.counter.profile_messages(request.messages, self.model_of(request))
        return sum(
            (self.counter.profile(p).with_template(_COMPLETION_OVERHEAD) for p in _prompts(request)),
            ScriptProfile.empty(),
        )

    def prompt_counts(self, request: LLMRequest) -> list[int]:
        """Our prompt count per prompt (one for chat and a single completions prompt)."""
        if request.endpoint == "chat":
            return [self.counter.count_messages(request.messages, self.model_of(request))]
        return [self.counter.count_text(p) for p in _prompts(request)] or [0]

    def check(
        self, request: LLMRequest, *, endpoint_key: str = "default", server: ServerTokens | None = None
    ) -> GuardDecision:
        """Does ``request`` fit the window of its model on ``endpoint_key``?"""
        return self._check(request, self._measure(request, endpoint_key, server))

    def _check(self, request: LLMRequest, measure: _Measure) -> GuardDecision:
        endpoint_key = measure.endpoint_key
        model = measure.model
        content: int | None = None
        roles: tuple[str, ...] = ()
        if request.endpoint == "chat":
            profile = self.counter.profile_messages(request.messages, model)
            ours = total = profile.total
            bound, estimated, content = measure.chat(request.messages)
            roles = tuple(str(m.get("role", "")) for m in request.messages)
        else:
            prompts = _prompts(request) or [""]
            profiles = [measure.profile(p).with_template(_COMPLETION_OVERHEAD) for p in prompts]
            profile = sum(profiles, ScriptProfile.empty())
            counts = [p.total - _COMPLETION_OVERHEAD for p in profiles]
            ours, total = max(counts), sum(counts)
            bound, estimated = max(measure.completion(p) for p in prompts)
        max_tokens = request.max_tokens if request.max_tokens is not None else self.default_max_tokens
        window = self.windows.window(model, endpoint_key, self.learner)
        limit = self.prompt_limits.get(endpoint_key)
        return GuardDecision(
            fits=bound + max_tokens <= window and (limit is None or bound <= limit),
            prompt_tokens=ours,
            estimated_prompt_tokens=bound,
            max_tokens=max_tokens,
            context_window=window,
            endpoint_key=endpoint_key,
            total_prompt_tokens=total,
            exact=estimated == 0,
            estimated_tokens=estimated,
            profile=profile,
            content_tokens=content,
            roles=roles,
            prompt_limit=limit,
            model=model,
        )

    # -- policies ----------------------------------------------------------------------
    def apply(
        self,
        request: LLMRequest,
        *,
        policy: str | None = None,
        endpoint_key: str = "default",
        server: ServerTokens | None = None,
    ) -> GuardedRequest:
        """Return request(s) that fit, with warnings, or raise :class:`ContextOverflow`."""
        chosen = policy or self.default_policy
        if chosen not in POLICIES:
            raise ConfigError(f"token policy {chosen!r} is not valid; valid values: {', '.join(POLICIES)}")
        measure = self._measure(request, endpoint_key, server)
        decision = self._check(request, measure)
        if decision.fits:
            return GuardedRequest(request, [], "none", (request,), (decision,))
        if chosen == "refuse":
            self.count_action("refuse")
            raise self._overflow(decision, "policy is refuse")
        if chosen == "shrink_output":
            guarded = self._shrink_output(request, decision)
        elif chosen == "split":
            guarded = self._split(request, decision, measure)
        else:
            guarded = self._truncate(request, decision, measure)
        checked = tuple(self._check(r, measure) for r in guarded[0])
        if not all(d.fits for d in checked):  # never hand out a request that does not fit
            self.count_action("refuse")
            raise self._overflow(decision, f"{chosen} could not make the request fit")
        requests, warnings, action = guarded
        self.count_action(action)
        return GuardedRequest(requests[0], warnings, action, requests, checked)

    def flag_length(self, response: LLMResponse) -> LLMResponse:
        """Attach a ``length`` warning to a response the model stopped at ``max_tokens``."""
        if response.finish_reason == "length" and not any(w.action == "length" for w in response.warnings):
            completion = response.usage.completion_tokens if response.usage is not None else None
            response.warnings.append(
                GuardWarning(
                    "length",
                    "the model stopped at max_tokens (finish_reason='length'); the answer may be cut",
                    tokens_after=completion,
                )
            )
            self.count_action("length")
        return response

    # -- internals ---------------------------------------------------------------------
    def count_action(self, action: str) -> None:
        """Count one guard action in ``iterate_token_guard_actions_total{action}``."""
        if self.metrics is not None:
            self.metrics.token_guard_actions.labels(action=action).inc()

    def _overflow(self, d: GuardDecision, why: str) -> ContextOverflow:
        counted = "counted exactly by the endpoint" if d.exact else f"{d.prompt_tokens} by cl100k"
        limit = f" (prompt limit {d.prompt_limit})" if d.prompt_limit is not None else ""
        return ContextOverflow(
            f"prompt of {d.estimated_prompt_tokens} tokens ({counted}) + max_tokens "
            f"{d.max_tokens} exceed the context window of {d.context_window} tokens{limit} on "
            f"{d.endpoint_key!r}: {why}",
            prompt_tokens=d.estimated_prompt_tokens,
            max_tokens=d.max_tokens,
            context_window=d.context_window,
        )

    def _shrink_output(
        self, request: LLMRequest, d: GuardDecision
    ) -> tuple[tuple[LLMRequest, ...], list[GuardWarning], str]:
        floor = min(self.min_output_tokens, d.max_tokens)
        if d.available < floor or (d.prompt_limit is not None and d.estimated_prompt_tokens > d.prompt_limit):
            raise self._overflow(d, f"even max_tokens={floor} (the floor) does not fit")
        new = d.available
        warning = GuardWarning(
            "shrink_output",
            f"max_tokens lowered from {d.max_tokens} to {new} to fit the context window "
            f"of {d.context_window}",
            tokens_before=d.max_tokens,
            tokens_after=new,
            removed=f"{d.max_tokens - new} tokens of the output budget",
        )
        return (request.replace(max_tokens=new),), [warning], "shrink_output"

    # truncate ----------------------------------------------------------------------
    def _truncate(
        self, request: LLMRequest, d: GuardDecision, measure: _Measure
    ) -> tuple[tuple[LLMRequest, ...], list[GuardWarning], str]:
        budget = d.room(d.max_tokens)
        if request.endpoint == "chat":
            messages, removed = self._truncate_messages(list(request.messages), budget, measure)
            new = request.replace(messages=tuple(messages))
        else:
            prompts = [request.prompt] if isinstance(request.prompt, str) else list(request.prompt or ())
            removed = []
            cut: list[str] = []
            for index, prompt in enumerate(prompts):
                text, n = self._cut_middle(prompt, budget - _COMPLETION_OVERHEAD, measure)
                if n:
                    removed.append(f"{n} tokens from the middle of prompt {index}")
                cut.append(text)
            new = request.replace(prompt=cut[0] if isinstance(request.prompt, str) else tuple(cut))
        after = self._check(new, measure)
        warning = GuardWarning(
            "truncate",
            f"prompt cut from {d.estimated_prompt_tokens} to {after.estimated_prompt_tokens} tokens to leave "
            f"{d.max_tokens} for the output in a window of {d.context_window}",
            tokens_before=d.estimated_prompt_tokens,
            tokens_after=after.estimated_prompt_tokens,
            removed="; ".join(removed),
        )
        return (new,), [warning], "truncate"

    def _truncate_messages(
        self, messages: list[Message], budget: int, measure: _Measure, *, keep: int | None = None
    ) -> tuple[list[Message], list[str]]:
        """Drop, then cut, until the messages' bound is at most ``budget``; ``keep`` is never dropped."""

        def bound(alive_messages: list[Message]) -> int:
            return measure.chat(alive_messages)[0]

        removed: list[str] = []
        last_user = keep if keep is not None else _last_user_index(messages)
        alive = [True] * len(messages)
        dropped: list[str] = []
        total = bound(messages)
        for i, message in enumerate(messages):
            if total <= budget:
                break
            if not alive[i] or i == last_user or message.get("role") in _SYSTEM_ROLES:
                continue
            group = [i]
            if message.get("tool_calls"):
                j = i + 1
                while j < len(messages) and messages[j].get("role") == "tool" and j != last_user:
                    group.append(j)
                    j += 1
            for j in group:
                alive[j] = False
                dropped.append(f"{messages[j].get('role', '?')}[{j}]")
            total = bound([m for k, m in enumerate(messages) if alive[k]])
        if dropped:
            removed.append(f"{len(dropped)} oldest message(s) dropped: {', '.join(dropped)}")
        # then cut the middle of the last user turn, then of the system prompts (largest first)
        order = [last_user] if last_user is not None else []
        order += sorted(
            (i for i, m in enumerate(messages) if alive[i] and m.get("role") in _SYSTEM_ROLES),
            key=lambda i: -self.counter.count_content(messages[i].get("content"), cached=True),
        )
        result = list(messages)
        for i in order:
            if total <= budget:
                break
            content = result[i].get("content")
            if not isinstance(content, str):
                continue
            # bounds of parts do not add up exactly to the bound of the whole: cut, re-measure, repeat
            target = measure.text(content) - (total - budget)
            cut = 0
            for _ in range(_CUT_ROUNDS):
                text, n = self._cut_middle(content, max(target, 0), measure)
                if not n:
                    break
                result[i] = {**result[i], "content": text}
                total = bound([m for k, m in enumerate(result) if alive[k]])
                cut = n
                if total <= budget or target <= 0:
                    break
                target -= total - budget
            if cut:
                removed.append(f"{cut} tokens from the middle of {result[i].get('role', '?')}[{i}]")
        return [m for i, m in enumerate(result) if alive[i]], removed

    def _cut_middle(self, text: str, target: int, measure: _Measure) -> tuple[str, int]:
        """Cut the middle of ``text`` (with a marker) so its bound is at most ``target``.

        Returns the text and how many of its (cl100k) tokens were removed (0:
        unchanged). The kept head and tail are exact prefix and suffix of ``text``.
        When even the bare marker does not fit, the marker alone is returned if it
        is shorter than the text, else the text unchanged (the caller re-checks).
        """
        if measure.text(text) <= target:
            return text, 0
        tokens = self.counter.encode(text)
        n = len(tokens)
        raw = text.encode("utf-8")
        starts = _byte_starts(self.counter, tokens)

        def candidate(keep: int) -> str:
            head_n = (keep + 1) // 2
            tail_n = keep - head_n
            head = raw[: starts[head_n]].decode("utf-8", errors="ignore")
            tail = raw[starts[n - tail_n] :].decode("utf-8", errors="ignore") if tail_n else ""
            return head + cut_marker(n - keep) + tail

        lo, hi = 0, n - 1  # largest keep whose candidate fits
        best = candidate(0)
        while lo <= hi:
            mid = (lo + hi) // 2
            text_mid = candidate(mid)
            if measure.text(text_mid) <= target:
                best, lo = text_mid, mid + 1
            else:
                hi = mid - 1
        if hi < 0 and self.counter.count_text(best) >= n:
            return text, 0  # not even the bare marker fits, and it would not be shorter
        return best, n - max(hi, 0)

    # split --------------------------------------------------------------------------
    def _split(
        self, request: LLMRequest, d: GuardDecision, measure: _Measure
    ) -> tuple[tuple[LLMRequest, ...], list[GuardWarning], str]:
        budget = d.room(d.max_tokens)
        removed: list[str] = []
        if request.endpoint == "chat":
            messages = list(request.messages)
            u = _last_user_index(messages)
            if u is None or not isinstance(messages[u].get("content"), str):
                return self._truncate(request, d, measure)
            text: str = messages[u]["content"]
            need = min(self.min_chunk_tokens, measure.text(text))

            def room(msgs: list[Message], index: int) -> int:
                blank = [*msgs[:index], {**msgs[index], "content": ""}, *msgs[index + 1 :]]
                return budget - measure.chat(blank)[0]

            if room(messages, u) < need:  # drop older history to make room for a piece
                placeholder = {**messages[u], "content": ""}
                trial = [*messages[:u], placeholder, *messages[u + 1 :]]
                kept, removed = self._truncate_messages(trial, budget - need, measure, keep=u)
                u = next(i for i, m in enumerate(kept) if m is placeholder)
                messages = kept
            space = room(messages, u)
            head, tail = messages[:u], messages[u + 1 :]
            for _ in range(_CUT_ROUNDS):  # a piece's bound inside the prompt may exceed its own
                if space < 1:
                    raise self._overflow(d, "no room for even a piece of the input")
                pieces = self._split_text(text, space, measure)
                requests = tuple(
                    request.replace(messages=(*head, {**messages[u], "content": p}, *tail)) for p in pieces
                )
                over = max(self._check(r, measure).estimated_prompt_tokens for r in requests) - budget
                if over <= 0:
                    break
                space -= over
        elif isinstance(request.prompt, str):
            if budget - _COMPLETION_OVERHEAD < 1:
                raise self._overflow(d, "no room for even a piece of the input")
            pieces = self._split_text(request.prompt, budget - _COMPLETION_OVERHEAD, measure)
            requests = tuple(request.replace(prompt=p) for p in pieces)
        else:  # a list of prompts is already one completion per prompt: cut each instead
            return self._truncate(request, d, measure)
        if len(requests) == 1:
            after = self._check(requests[0], measure)
            warning = GuardWarning(
                "truncate",
                f"split: older messages dropped so the input fits whole in a window of {d.context_window}",
                tokens_before=d.estimated_prompt_tokens,
                tokens_after=after.estimated_prompt_tokens,
                removed="; ".join(removed),
            )
            return requests, [warning], "truncate"
        largest = max(self._check(r, measure).estimated_prompt_tokens for r in requests)
        split_note = f"nothing of the input: it was split into {len(pieces)} parts run in order"
        what = "; ".join([*removed, split_note])
        warning = GuardWarning(
            "split",
            f"input split into {len(pieces)} parts (largest prompt {largest} tokens) to fit a window of "
            f"{d.context_window} with {d.max_tokens} output tokens each; answers joined in order",
            tokens_before=d.estimated_prompt_tokens,
            tokens_after=largest,
            removed=what,
        )
        return requests, [warning], "split"

    def _split_text(self, text: str, budget: int, measure: _Measure) -> list[str]:
        """Exact consecutive substrings of ``text``, each bounded by at most ``budget``.

        Pieces end at a paragraph break, a line break or a space in their last fifth
        when there is one, else at a token boundary (never inside a character).
        """
        if budget < 1:
            raise ValueError("budget must be >= 1")
        raw = text.encode("utf-8")
        tokens = self.counter.encode(text)
        starts = _byte_starts(self.counter, tokens)
        whole = measure.text(text)
        per_token = max(whole / max(len(tokens), 1), 1e-6)  # server tokens per cl100k token, on average
        pieces: list[str] = []
        pos = 0
        while pos < len(raw):
            take = max(1, math.floor(budget / per_token))
            while True:
                first = bisect.bisect_right(starts, pos) - 1
                end = starts[min(first + take, len(tokens))]
                if end < len(raw):
                    end = _nice_cut(raw, pos, end)
                if end <= pos:  # always make progress by at least one character
                    end = _char_end(raw, pos)
                piece = raw[pos:end].decode("utf-8")
                over = measure.text(piece) - budget
                if over <= 0 or take <= 1:
                    break
                take = max(1, min(take - 1, math.floor(take * budget / (budget + over))))
            pieces.append(piece)
            pos = end
        return pieces or [text]


def content_texts(content: Any) -> list[str]:
    """The texts of a message content as counted: a string, the text of each part, else JSON."""
    if content is None:
        return []
    if isinstance(content, str):
        return [content]
    parts = content if isinstance(content, Sequence) else [content]
    return [
        p["text"]
        if isinstance(p, Mapping) and isinstance(p.get("text"), str)
        else json.dumps(p, sort_keys=True, default=str)
        for p in parts
    ]


def request_texts(request: LLMRequest) -> list[str]:
    """Every text of ``request`` an exact count is needed for (contents, or prompts)."""
    if request.endpoint == "chat":
        return [t for m in request.messages for t in content_texts(m.get("content"))]
    return _prompts(request)


def _prompts(request: LLMRequest) -> list[str]:
    prompt = request.prompt
    if prompt is None:
        return []
    return [prompt] if isinstance(prompt, str) else list(prompt)


def _last_user_index(messages: Sequence[Message]) -> int | None:
    for i in range(len(messages) - 1, -1, -1):
        if messages[i].get("role") == "user":
            return i
    for i in range(len(messages) - 1, -1, -1):
        if messages[i].get("role") not in _SYSTEM_ROLES:
            return i
    return None


def _byte_starts(counter: TokenCounter, tokens: list[int]) -> list[int]:
    """Byte offset where each token starts, plus the total length at the end."""
    starts = [0]
    encoding = counter.encoding
    for token in tokens:
        starts.append(starts[-1] + len(encoding.decode_single_token_bytes(token)))
    return starts


def _is_char_start(raw: bytes, i: int) -> bool:
    return i >= len(raw) or (raw[i] & 0xC0) != 0x80


def _char_end(raw: bytes, pos: int) -> int:
    end = pos + 1
    while not _is_char_start(raw, end):
        end += 1
    return end


def _nice_cut(raw: bytes, pos: int, end: int) -> int:
    lower = pos + (end - pos) * 4 // 5
    for sep in (b"\n\n", b"\n", b" "):
        at = raw.rfind(sep, lower, end)
        if at > pos:
            return at + len(sep)
    while end > pos and not _is_char_start(raw, end):
        end -= 1
    return end

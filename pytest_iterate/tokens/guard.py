"""The token guard: check a request against the context window and apply a policy.

A request *fits* when ``estimate(prompt) + max_tokens <= window``, where
``estimate`` is the learned upper bound of the server's count for our count (see
:class:`~.windows.RatioLearner`) and ``max_tokens`` is the request's, or
``config.default_max_tokens`` when it has none. When it does not fit, the policy
(per call, else ``config.token_policy``) decides:

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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pytest_iterate.client.errors import ConfigError, ContextOverflow
from pytest_iterate.client.types import GuardWarning, LLMRequest, LLMResponse, Message
from pytest_iterate.tokens.counter import REPLY_PRIMING, TokenCounter
from pytest_iterate.tokens.windows import ContextWindows, RatioLearner

if TYPE_CHECKING:
    from pytest_iterate.client.config import IterateConfig
    from pytest_iterate.client.metrics import IterateMetrics

__all__ = ["POLICIES", "GuardDecision", "GuardedRequest", "TokenGuard", "cut_marker"]

POLICIES = ("truncate", "split", "shrink_output", "refuse")
_SYSTEM_ROLES = frozenset({"system", "developer"})


def cut_marker(removed_tokens: int) -> str:
    """The text put where the middle of a message was cut."""
    return f"\n[... {removed_tokens} tokens cut by the token guard ...]\n"


@dataclass(frozen=True, slots=True)
class GuardDecision:
    """Whether a request fits, with the counts behind the answer."""

    fits: bool
    prompt_tokens: int  # our count (the largest prompt of a list of prompts)
    estimated_prompt_tokens: int  # upper bound of the server's count
    max_tokens: int
    context_window: int
    endpoint_key: str
    total_prompt_tokens: int  # our count over all prompts (what usage.prompt_tokens sums)

    @property
    def available(self) -> int:
        """Room left for the output."""
        return self.context_window - self.estimated_prompt_tokens

    @property
    def overflow(self) -> int:
        return self.estimated_prompt_tokens + self.max_tokens - self.context_window


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


class TokenGuard:
    """Checks requests against context windows and applies truncate/split/shrink/refuse."""

    def __init__(
        self,
        config: IterateConfig | None = None,
        metrics: IterateMetrics | None = None,
        counter: TokenCounter | None = None,
        learner: RatioLearner | None = None,
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
            margin = config.token_safety_margin if config is not None else 0.05
            learner = RatioLearner(initial_ratio=1.0 + margin)
        self.learner = learner
        self.windows = windows or ContextWindows(
            config, endpoint_windows=endpoint_windows, default_window=default_window
        )
        self.default_max_tokens = config.default_max_tokens if config is not None else 512
        self.default_policy = config.token_policy if config is not None else "truncate"
        self.default_model = config.model if config is not None else None
        self.min_output_tokens = min_output_tokens
        self.min_chunk_tokens = min_chunk_tokens

    # -- counting ----------------------------------------------------------------------
    def model_of(self, request: LLMRequest) -> str | None:
        return request.model or self.default_model

    def prompt_counts(self, request: LLMRequest) -> list[int]:
        """Our prompt count per prompt (one for chat and a single completions prompt)."""
        if request.endpoint == "chat":
            return [self.counter.count_messages(request.messages, self.model_of(request))]
        prompt = request.prompt
        if prompt is None:
            return [0]
        if isinstance(prompt, str):
            return [self.counter.count_text(prompt)]
        return [self.counter.count_text(p) for p in prompt] or [0]

    def check(self, request: LLMRequest, *, endpoint_key: str = "default") -> GuardDecision:
        """Does ``request`` fit the window of its model on ``endpoint_key``?"""
        counts = self.prompt_counts(request)
        ours = max(counts)
        estimate = self.learner.estimate(endpoint_key, ours)
        max_tokens = request.max_tokens if request.max_tokens is not None else self.default_max_tokens
        window = self.windows.window(self.model_of(request), endpoint_key, self.learner)
        return GuardDecision(
            fits=estimate + max_tokens <= window,
            prompt_tokens=ours,
            estimated_prompt_tokens=estimate,
            max_tokens=max_tokens,
            context_window=window,
            endpoint_key=endpoint_key,
            total_prompt_tokens=sum(counts),
        )

    # -- policies ----------------------------------------------------------------------
    def apply(
        self, request: LLMRequest, *, policy: str | None = None, endpoint_key: str = "default"
    ) -> GuardedRequest:
        """Return request(s) that fit, with warnings, or raise :class:`ContextOverflow`."""
        chosen = policy or self.default_policy
        if chosen not in POLICIES:
            raise ConfigError(f"token policy {chosen!r} is not valid; valid values: {', '.join(POLICIES)}")
        decision = self.check(request, endpoint_key=endpoint_key)
        if decision.fits:
            return GuardedRequest(request, [], "none", (request,), (decision,))
        if chosen == "refuse":
            self.count_action("refuse")
            raise self._overflow(decision, "policy is refuse")
        if chosen == "shrink_output":
            guarded = self._shrink_output(request, decision)
        elif chosen == "split":
            guarded = self._split(request, decision)
        else:
            guarded = self._truncate(request, decision)
        checked = tuple(self.check(r, endpoint_key=endpoint_key) for r in guarded[0])
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
        return ContextOverflow(
            f"prompt of {d.estimated_prompt_tokens} tokens (counted {d.prompt_tokens}) + max_tokens "
            f"{d.max_tokens} exceed the context window of {d.context_window} tokens on "
            f"{d.endpoint_key!r}: {why}",
            prompt_tokens=d.estimated_prompt_tokens,
            max_tokens=d.max_tokens,
            context_window=d.context_window,
        )

    def _prompt_budget(self, d: GuardDecision, max_tokens: int) -> int:
        """The largest count of ours for the prompt that leaves ``max_tokens`` room."""
        return self.learner.budget(d.endpoint_key, d.context_window - max_tokens)

    def _shrink_output(
        self, request: LLMRequest, d: GuardDecision
    ) -> tuple[tuple[LLMRequest, ...], list[GuardWarning], str]:
        floor = min(self.min_output_tokens, d.max_tokens)
        if d.available < floor:
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
        self, request: LLMRequest, d: GuardDecision
    ) -> tuple[tuple[LLMRequest, ...], list[GuardWarning], str]:
        budget = self._prompt_budget(d, d.max_tokens)
        if request.endpoint == "chat":
            model = self.model_of(request)
            messages, removed = self._truncate_messages(list(request.messages), budget, model)
            new = request.replace(messages=tuple(messages))
        else:
            prompts = [request.prompt] if isinstance(request.prompt, str) else list(request.prompt or ())
            removed = []
            cut: list[str] = []
            for index, prompt in enumerate(prompts):
                text, n = self._cut_middle(prompt, budget)
                if n:
                    removed.append(f"{n} tokens from the middle of prompt {index}")
                cut.append(text)
            new = request.replace(prompt=cut[0] if isinstance(request.prompt, str) else tuple(cut))
        after = self.check(new, endpoint_key=d.endpoint_key)
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
        self, messages: list[Message], budget: int, model: str | None, *, keep: int | None = None
    ) -> tuple[list[Message], list[str]]:
        """Drop, then cut, until the messages count at most ``budget``; ``keep`` is never dropped."""
        counts = [self.counter.count_message(m, model) for m in messages]
        total = REPLY_PRIMING + sum(counts)
        removed: list[str] = []
        last_user = keep if keep is not None else _last_user_index(messages)
        alive = [True] * len(messages)
        dropped: list[str] = []
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
                total -= counts[j]
                dropped.append(f"{messages[j].get('role', '?')}[{j}]")
        if dropped:
            removed.append(f"{len(dropped)} oldest message(s) dropped: {', '.join(dropped)}")
        # then cut the middle of the last user turn, then of the system prompts (largest first)
        order = [last_user] if last_user is not None else []
        order += sorted(
            (i for i, m in enumerate(messages) if alive[i] and m.get("role") in _SYSTEM_ROLES),
            key=lambda i: -counts[i],
        )
        result = list(messages)
        for i in order:
            if total <= budget:
                break
            content = result[i].get("content")
            if not isinstance(content, str):
                continue
            content_tokens = self.counter.count_text(content)
            target = content_tokens - (total - budget)
            text, n = self._cut_middle(content, max(target, 0))
            if n:
                result[i] = {**result[i], "content": text}
                new_count = self.counter.count_message(result[i], model)
                total += new_count - counts[i]
                counts[i] = new_count
                removed.append(f"{n} tokens from the middle of {result[i].get('role', '?')}[{i}]")
        return [m for i, m in enumerate(result) if alive[i]], removed

    def _cut_middle(self, text: str, target: int) -> tuple[str, int]:
        """Cut the middle of ``text`` (with a marker) so it counts at most ``target``.

        Returns the text and how many of its tokens were removed (0: unchanged). The
        kept head and tail are exact prefix and suffix of ``text``. When even the bare
        marker does not fit, the marker alone is returned if it is shorter than the
        text, else the text unchanged (the caller re-checks).
        """
        tokens = self.counter.encode(text)
        n = len(tokens)
        if n <= target:
            return text, 0
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
            if self.counter.count_text(text_mid) <= target:
                best, lo = text_mid, mid + 1
            else:
                hi = mid - 1
        if hi < 0 and self.counter.count_text(best) >= n:
            return text, 0  # not even the bare marker fits, and it would not be shorter
        return best, n - max(hi, 0)

    # split --------------------------------------------------------------------------
    def _split(
        self, request: LLMRequest, d: GuardDecision
    ) -> tuple[tuple[LLMRequest, ...], list[GuardWarning], str]:
        budget = self._prompt_budget(d, d.max_tokens)
        model = self.model_of(request)
        removed: list[str] = []
        if request.endpoint == "chat":
            messages = list(request.messages)
            u = _last_user_index(messages)
            if u is None or not isinstance(messages[u].get("content"), str):
                return self._truncate(request, d)
            text: str = messages[u]["content"]
            need = min(self.min_chunk_tokens, self.counter.count_text(text))

            def room(msgs: list[Message], index: int) -> int:
                fixed = REPLY_PRIMING + sum(
                    self.counter.count_message(m, model, content_tokens=0 if j == index else None)
                    for j, m in enumerate(msgs)
                )
                return budget - fixed

            if room(messages, u) < need:  # drop older history to make room for a piece
                placeholder = {**messages[u], "content": ""}
                trial = [*messages[:u], placeholder, *messages[u + 1 :]]
                kept, removed = self._truncate_messages(trial, budget - need, model, keep=u)
                u = next(i for i, m in enumerate(kept) if m is placeholder)
                messages = kept
            space = room(messages, u)
            if space < 1:
                raise self._overflow(d, "no room for even a piece of the input")
            pieces = self._split_text(text, space)
            head, tail = messages[:u], messages[u + 1 :]
            requests = tuple(
                request.replace(messages=(*head, {**messages[u], "content": p}, *tail)) for p in pieces
            )
        elif isinstance(request.prompt, str):
            pieces = self._split_text(request.prompt, budget)
            requests = tuple(request.replace(prompt=p) for p in pieces)
        else:  # a list of prompts is already one completion per prompt: cut each instead
            return self._truncate(request, d)
        if len(requests) == 1:
            after = self.check(requests[0], endpoint_key=d.endpoint_key)
            warning = GuardWarning(
                "truncate",
                f"split: older messages dropped so the input fits whole in a window of {d.context_window}",
                tokens_before=d.estimated_prompt_tokens,
                tokens_after=after.estimated_prompt_tokens,
                removed="; ".join(removed),
            )
            return requests, [warning], "truncate"
        largest = max(self.check(r, endpoint_key=d.endpoint_key).estimated_prompt_tokens for r in requests)
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

    def _split_text(self, text: str, budget: int) -> list[str]:
        """Exact consecutive substrings of ``text``, each counting at most ``budget``.

        Pieces end at a paragraph break, a line break or a space in their last fifth
        when there is one, else at a token boundary (never inside a character).
        """
        if budget < 1:
            raise ValueError("budget must be >= 1")
        raw = text.encode("utf-8")
        tokens = self.counter.encode(text)
        starts = _byte_starts(self.counter, tokens)
        pieces: list[str] = []
        pos = 0
        while pos < len(raw):
            take = budget
            while True:
                first = bisect.bisect_right(starts, pos) - 1
                end = starts[min(first + take, len(tokens))]
                if end < len(raw):
                    end = _nice_cut(raw, pos, end)
                if end <= pos:  # always make progress by at least one character
                    end = _char_end(raw, pos)
                piece = raw[pos:end].decode("utf-8")
                over = self.counter.count_text(piece) - budget
                if over <= 0 or take <= 1:
                    break
                take -= over
            pieces.append(piece)
            pos = end
        return pieces or [text]


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

"""TokenGuard: properties of truncate / split / shrink_output, refuse, warnings, metrics."""

# ruff: noqa: RUF001  (texts in many scripts on purpose: full-width commas, Greek, Arabic)

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from pytest_iterate.client.config import IterateConfig
from pytest_iterate.client.errors import ConfigError, ContextOverflow
from pytest_iterate.client.metrics import IterateMetrics
from pytest_iterate.client.types import LLMRequest, LLMResponse, Usage
from pytest_iterate.tokens import SCRIPTS, ScriptLearner, TokenCounter, TokenGuard
from pytest_iterate.tokens.guard import cut_marker

COUNTER = TokenCounter()
WORDS = st.sampled_from(
    [
        *("the", "quick", "brown", "fox", "jumps", "über", "naïve", "日本語", "🙂"),
        *("\n", "\n\n", "def f():", "42", "  "),
    ]
)
TEXT = st.lists(WORDS, min_size=0, max_size=400).map(" ".join)
LONG_TEXT = st.tuples(TEXT, st.lists(WORDS, min_size=1, max_size=30), st.integers(0, 60), TEXT).map(
    lambda t: t[0] + " ".join(t[1] * t[2]) + t[3]
)
SETTINGS = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def chats(draw: Any) -> tuple[LLMRequest, int]:
    messages: list[dict[str, str]] = []
    if draw(st.booleans()):
        messages.append({"role": "system", "content": draw(st.lists(WORDS, max_size=60).map(" ".join))})
    for i in range(draw(st.integers(0, 6))):
        messages.append({"role": "user" if i % 2 == 0 else "assistant", "content": draw(TEXT)})
    messages.append({"role": "user", "content": draw(LONG_TEXT)})
    max_tokens = draw(st.one_of(st.none(), st.integers(1, 400)))
    # windows around the interesting range: from "not even the system prompt fits" up
    system = COUNTER.count_messages(messages[:1]) if messages[0]["role"] == "system" else 0
    window = (max_tokens or 128) + system + draw(st.one_of(st.integers(-20, 60), st.integers(60, 1200)))
    window = max(window, 16)
    return LLMRequest(messages=tuple(messages), max_tokens=max_tokens), window


def make_guard(window: int, *, metrics: IterateMetrics | None = None, ratio: float = 1.05) -> TokenGuard:
    """A guard whose every class costs ``ratio`` per cl100k token (one ratio: simple to reason about)."""
    config = IterateConfig(context_window=window, default_max_tokens=128)
    learner = ScriptLearner(priors={s: (0.5, ratio) for s in SCRIPTS})
    return TokenGuard(config, metrics=metrics, counter=COUNTER, learner=learner)


def bound(guard: TokenGuard, messages: Any) -> int:
    return guard.learner.estimate("default", COUNTER.profile_messages(messages), guard.default_model)


def fits(guard: TokenGuard, request: LLMRequest, window: int) -> bool:
    counted = COUNTER.count_messages(request.messages)
    max_tokens = request.max_tokens if request.max_tokens is not None else 128
    return counted + max_tokens <= window and bound(guard, request.messages) + max_tokens <= window


def minimal_fits(guard: TokenGuard, request: LLMRequest, window: int, spare: int = 0) -> bool:
    """Would the system prompt plus a marker-only last user turn fit (with ``spare`` room)?"""
    system = [m for m in request.messages if m["role"] == "system"]
    probe = request.replace(messages=(*system, {"role": "user", "content": cut_marker(999999)}))
    max_tokens = request.max_tokens if request.max_tokens is not None else 128
    return bound(guard, probe.messages) + max_tokens + spare <= window


@SETTINGS
@given(chats())
def test_truncate_always_fits_and_keeps_the_system_prompt(case: tuple[LLMRequest, int]) -> None:
    request, window = case
    guard = make_guard(window)
    try:
        guarded = guard.apply(request, policy="truncate")
        event(guarded.action)
    except ContextOverflow as exc:
        event("overflow")
        assert not minimal_fits(guard, request, window)
        assert exc.context_window == window and exc.prompt_tokens is not None
        return
    assert len(guarded.requests) == 1
    assert fits(guard, guarded.request, window)
    if guarded.action == "none":
        assert guarded.request == request and not guarded.warnings
        return
    assert guarded.action == "truncate" and guarded.warnings[0].removed
    assert guarded.request.messages[-1]["role"] == "user"
    before, after = guarded.warnings[0].tokens_before, guarded.warnings[0].tokens_after
    assert before is not None and after is not None and after < before
    if minimal_fits(guard, request, window):  # then the system prompt survives intact
        system = [m for m in request.messages if m["role"] == "system"]
        assert [m for m in guarded.request.messages if m["role"] == "system"] == system
        kept = [m for m in guarded.request.messages if m["role"] != "system"]
        assert len(kept) >= 1


@SETTINGS
@given(chats())
def test_split_pieces_fit_and_cover_the_input_in_order(case: tuple[LLMRequest, int]) -> None:
    request, window = case
    guard = make_guard(window)
    text = request.messages[-1]["content"]
    try:
        guarded = guard.apply(request, policy="split")
        event(guarded.action)
    except ContextOverflow:
        event("overflow")
        assert not minimal_fits(guard, request, window, spare=80)
        return
    for piece in guarded.requests:
        assert fits(guard, piece, window)
    if guarded.action == "split":
        assert len(guarded.requests) > 1
        assert "".join(r.messages[-1]["content"] for r in guarded.requests) == text
        system = [m for m in request.messages if m["role"] == "system"]
        if minimal_fits(guard, request, window, spare=80):
            for piece in guarded.requests:
                assert [m for m in piece.messages if m["role"] == "system"] == system
    elif guarded.action == "truncate":  # only older history had to go; the input is whole
        assert guarded.request.messages[-1]["content"] == text


@SETTINGS
@given(chats())
def test_shrink_output_fits_or_refuses_below_the_floor(case: tuple[LLMRequest, int]) -> None:
    request, window = case
    guard = make_guard(window)
    decision = guard.check(request)
    try:
        guarded = guard.apply(request, policy="shrink_output")
    except ContextOverflow:
        assert decision.available < min(guard.min_output_tokens, decision.max_tokens)
        return
    assert fits(guard, guarded.request, window)
    assert guarded.request.messages == request.messages
    if guarded.action == "shrink_output":
        assert guarded.request.max_tokens == decision.available < decision.max_tokens


LONG = "The quick brown fox jumps over the lazy dog. " * 200
CHAT = LLMRequest(
    messages=(
        {"role": "system", "content": "Answer briefly."},
        {"role": "user", "content": "old question " * 40},
        {"role": "assistant", "content": "old answer " * 40},
        {"role": "user", "content": LONG},
    ),
    max_tokens=100,
)


def actions(metrics: IterateMetrics, action: str) -> float:
    return metrics.registry.get_sample_value("iterate_token_guard_actions_total", {"action": action}) or 0.0


def test_fitting_request_passes_untouched_and_is_not_counted() -> None:
    metrics = IterateMetrics()
    guard = make_guard(128000, metrics=metrics)
    guarded = guard.apply(CHAT)
    assert guarded.action == "none" and guarded.request is CHAT and guarded.warnings == []
    assert sum(actions(metrics, a) for a in ("truncate", "split", "shrink_output", "refuse")) == 0


def test_refuse_raises_with_the_counts_and_counts_it() -> None:
    metrics = IterateMetrics()
    guard = make_guard(500, metrics=metrics)
    with pytest.raises(ContextOverflow) as info:
        guard.apply(CHAT, policy="refuse")
    exc = info.value
    assert exc.context_window == 500 and exc.max_tokens == 100
    assert exc.prompt_tokens == guard.check(CHAT).estimated_prompt_tokens > 400
    assert "500" in str(exc)
    assert actions(metrics, "refuse") == 1


def test_truncate_drops_oldest_first_then_cuts_the_middle_with_a_marker() -> None:
    metrics = IterateMetrics()
    guard = make_guard(600, metrics=metrics)
    guarded = guard.apply(CHAT, policy="truncate")
    roles = [m["role"] for m in guarded.request.messages]
    assert roles == ["system", "user"]
    content = guarded.request.messages[-1]["content"]
    assert "tokens cut by the token guard" in content
    head, tail = content.split("\n[...", 1)
    assert LONG.startswith(head) and LONG.endswith(tail.split("...]\n", 1)[1])
    warning = guarded.warnings[0]
    assert warning.action == "truncate" and "user[1], assistant[2]" in (warning.removed or "")
    assert "from the middle of user[3]" in (warning.removed or "")
    assert actions(metrics, "truncate") == 1


def test_truncate_keeps_the_last_turn_whole_when_dropping_history_is_enough() -> None:
    request = CHAT.replace(messages=(*CHAT.messages[:3], {"role": "user", "content": "short question"}))
    full = make_guard(128000).check(request).estimated_prompt_tokens
    guard = make_guard(full + 100 - 1)  # one token short
    guarded = guard.apply(request, policy="truncate")
    assert guarded.request.messages[-1] == {"role": "user", "content": "short question"}
    assert guarded.request.messages[0] == CHAT.messages[0]
    assert len(guarded.request.messages) == 3  # only the oldest message went


def test_truncate_drops_an_assistant_tool_call_with_its_answers() -> None:
    request = LLMRequest(
        messages=(
            {"role": "system", "content": "s"},
            {"role": "assistant", "content": "", "tool_calls": [{"id": "1", "type": "function"}]},
            {"role": "tool", "tool_call_id": "1", "content": "result " * 100},
            {"role": "user", "content": "go on"},
        ),
        max_tokens=10,
    )
    guard = make_guard(60)
    guarded = guard.apply(request, policy="truncate")
    assert [m["role"] for m in guarded.request.messages] == ["system", "user"]


def test_shrink_output_lowers_max_tokens_with_a_warning() -> None:
    metrics = IterateMetrics()
    request = CHAT.replace(messages=(*CHAT.messages[:1], {"role": "user", "content": "hi"}), max_tokens=4000)
    guard = make_guard(1000, metrics=metrics)
    guarded = guard.apply(request, policy="shrink_output")
    assert guarded.request.max_tokens == guard.check(request).available
    w = guarded.warnings[0]
    assert (w.action, w.tokens_before, w.tokens_after) == ("shrink_output", 4000, guarded.request.max_tokens)
    assert actions(metrics, "shrink_output") == 1


def test_max_tokens_none_is_checked_with_the_default() -> None:
    guard = make_guard(200)
    decision = guard.check(LLMRequest(messages=({"role": "user", "content": "hi"},)))
    assert decision.max_tokens == 128 and decision.fits
    assert not guard.check(LLMRequest(messages=({"role": "user", "content": "hi " * 80},))).fits


def test_split_completions_prompt_and_warning() -> None:
    metrics = IterateMetrics()
    guard = make_guard(300, metrics=metrics)
    request = LLMRequest(endpoint="completions", prompt=LONG, max_tokens=50)
    guarded = guard.apply(request, policy="split")
    assert guarded.action == "split" and len(guarded.requests) >= 8
    assert "".join(str(r.prompt) for r in guarded.requests) == LONG
    assert all(d.fits for d in guarded.decisions)
    assert guarded.warnings[0].action == "split" and actions(metrics, "split") == 1


def test_truncate_each_prompt_of_a_list() -> None:
    guard = make_guard(300)
    request = LLMRequest(endpoint="completions", prompt=("short", LONG), max_tokens=50)
    guarded = guard.apply(request, policy="truncate")
    assert isinstance(guarded.request.prompt, tuple) and guarded.request.prompt[0] == "short"
    assert "tokens cut by the token guard" in guarded.request.prompt[1]
    assert guarded.decisions[0].fits


def test_learned_ratio_shrinks_the_budget() -> None:
    request = LLMRequest(messages=({"role": "user", "content": "word " * 700},), max_tokens=100)
    loose, tight = make_guard(1000), make_guard(1000, ratio=1.5)
    assert loose.check(request).fits and not tight.check(request).fits
    guarded = tight.apply(request, policy="truncate")
    assert tight.check(guarded.request).estimated_prompt_tokens + 100 <= 1000


def test_the_bound_is_per_script_not_one_ratio() -> None:
    """An English prompt and a Chinese one of the same cl100k size are bounded apart."""
    guard = TokenGuard(IterateConfig(context_window=4096, model="smollm2"), counter=COUNTER)
    english = "The component validates every argument and records each change. " * 60
    chinese = "每个操作都会校验参数，遇到错误输入时抛出有文档说明的异常。" * 30
    en, zh = (
        guard.check(LLMRequest(messages=({"role": "user", "content": t},), max_tokens=64))
        for t in (english, chinese)
    )
    assert en.profile["latin"] > 0.8 * en.prompt_tokens and zh.profile["cjk"] > 0.8 * zh.prompt_tokens
    english_prompt = en.profile
    guard.learner.observe("default", english_prompt, round(english_prompt.total * 1.05), "smollm2")
    en_after, zh_after = (
        guard.check(LLMRequest(messages=({"role": "user", "content": t},), max_tokens=64))
        for t in (english, chinese)
    )
    assert en_after.estimated_prompt_tokens < 1.2 * en.prompt_tokens  # learned: close to 1.05x
    assert zh_after.estimated_prompt_tokens / zh.prompt_tokens > 1.7  # not taught by English text


def test_completions_prompt_gets_a_token_for_the_bos() -> None:
    guard = make_guard(1000, ratio=1.0)
    decision = guard.check(LLMRequest(endpoint="completions", prompt="hello world", max_tokens=10))
    assert (decision.prompt_tokens, decision.estimated_prompt_tokens) == (2, 3)


def test_flag_length_once_and_counted() -> None:
    metrics = IterateMetrics()
    guard = make_guard(1000, metrics=metrics)
    response = LLMResponse(text="abc", finish_reason="length", usage=Usage(5, 16))
    guard.flag_length(guard.flag_length(response))
    assert [w.action for w in response.warnings] == ["length"] and response.partial
    assert response.warnings[0].tokens_after == 16 and actions(metrics, "length") == 1
    stop = guard.flag_length(LLMResponse(text="ok", finish_reason="stop"))
    assert stop.complete and stop.warnings == []


def test_bad_policy_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="'chop'"):
        make_guard(1000).apply(CHAT, policy="chop")


def test_default_policy_comes_from_config() -> None:
    config = IterateConfig(context_window=500, token_policy="refuse")
    with pytest.raises(ContextOverflow):
        TokenGuard(config, counter=COUNTER).apply(CHAT)

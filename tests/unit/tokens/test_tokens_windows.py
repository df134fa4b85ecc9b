"""Context-window table, window precedence, context-error parsing, the ratio learner."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pytest_iterate.client.config import IterateConfig
from pytest_iterate.tokens import (
    ContextWindows,
    RatioLearner,
    context_window_for,
    parse_context_error,
)
from pytest_iterate.tokens.windows import is_context_error_text


@pytest.mark.parametrize(
    ("model", "window"),
    [
        ("gpt-4o", 128000),
        ("GPT-4o-mini-2024-07-18", 128000),
        ("gpt-4.1-nano", 1047576),
        ("gpt-4", 8192),
        ("gpt-4-turbo-preview", 128000),
        ("gpt-3.5-turbo", 16385),
        ("meta-llama/Meta-Llama-3-8B-Instruct", 8192),
        ("meta-llama/Llama-3.1-8B-Instruct", 131072),
        ("llama3.1:8b", 131072),
        ("Qwen/Qwen2.5-Coder-7B-Instruct", 32768),
        ("HuggingFaceTB/SmolLM2-360M-Instruct", 2048),
        ("smollm2-135m-instruct-q8_0.gguf", 2048),
        ("mistralai/Mistral-7B-Instruct-v0.3", 32768),
    ],
)
def test_table_prefix_case_insensitive(model: str, window: int) -> None:
    assert context_window_for(model) == window


def test_unknown_model_gets_the_configurable_default() -> None:
    assert context_window_for("my-finetune") == 4096
    assert context_window_for("my-finetune", default=1000) == 1000
    assert context_window_for(None, default=77) == 77


def test_window_precedence() -> None:
    learner = RatioLearner()
    windows = ContextWindows(IterateConfig(context_window=5000), endpoint_windows={"local": 2048})
    assert windows.window("gpt-4o", "local") == 2048  # endpoint override first
    assert windows.window("gpt-4o", "api") == 5000  # then config.context_window
    assert ContextWindows(None, default_window=999).window("odd", "x") == 999
    assert ContextWindows(None).window("gpt-4", "x") == 8192
    # a smaller window the endpoint stated in an error caps everything
    learner.learn_from_error("api", 100, parse_context_error("maximum context length is 1024 tokens"))
    assert windows.window("gpt-4o", "api", learner) == 1024
    assert windows.window("gpt-4o", "local", learner) == 2048


def test_parse_openai_and_vllm_messages() -> None:
    info = parse_context_error(
        "This model's maximum context length is 2048 tokens. However, you requested 2301 tokens "
        "(1789 in the messages, 512 in the completion). Please reduce the length of the messages."
    )
    assert (info.context_window, info.requested_tokens, info.server_prompt_tokens) == (2048, 2301, 1789)
    older = parse_context_error(
        "This model's maximum context length is 4097 tokens. However, your messages resulted in 5000 tokens."
    )
    assert older.context_window == 4097 and older.server_prompt_tokens == 5000


def test_parse_llama_cpp_error_body() -> None:
    body = (
        '{"error":{"code":400,"message":"the request exceeds the available context size, try increasing it",'
        '"type":"exceed_context_size_error","n_prompt_tokens":2301,"n_ctx":2048}}'
    )
    info = parse_context_error(body)
    assert is_context_error_text(body)
    assert info.context_window == 2048 and info.server_prompt_tokens == 2301
    bare = parse_context_error("the request exceeds the available context size")
    assert bare.context_window is None and bare.server_prompt_tokens is None
    assert not is_context_error_text("Invalid API key provided")


def test_learner_starts_at_one_plus_margin() -> None:
    learner = RatioLearner.from_config(IterateConfig(token_safety_margin=0.1))
    assert learner.ratio("x") == pytest.approx(1.1)
    assert learner.estimate("x", 1000) == 1100


def test_learner_takes_the_max_ratio_and_never_loosens() -> None:
    learner = RatioLearner(initial_ratio=1.05, learn_margin=0.02)
    learner.observe("smol", 1000, 1300)  # the server counts 30 % more
    assert learner.ratio("smol") == pytest.approx(1.3 * 1.02)
    learner.observe("smol", 1000, 900)
    assert learner.ratio("smol") == pytest.approx(1.3 * 1.02)
    assert learner.ratio("other") == pytest.approx(1.05)  # per endpoint


def test_short_prompts_only_raise_the_slack() -> None:
    learner = RatioLearner(initial_ratio=1.0, min_learn_tokens=32)
    learner.observe("e", 10, 25)  # a chat template's fixed overhead
    assert learner.ratio("e") == 1.0 and learner.slack("e") == 15
    assert learner.estimate("e", 10) >= 25
    assert learner.estimate("e", 1000) == 1015  # not 2500


@given(
    st.lists(st.tuples(st.integers(1, 5000), st.floats(0.5, 3.0)), max_size=20),
    st.integers(1, 10000),
)
def test_estimate_bounds_every_observation_and_budget_inverts_it(
    observations: list[tuple[int, float]], server_budget: int
) -> None:
    learner = RatioLearner()
    for ours, factor in observations:
        learner.observe("e", ours, max(1, round(ours * factor)))
    for ours, factor in observations:
        assert learner.estimate("e", ours) >= max(1, round(ours * factor))
    budget = learner.budget("e", server_budget)
    assert budget == 0 or learner.estimate("e", budget) <= server_budget
    assert learner.estimate("e", budget + 1) > server_budget or budget == 0


def test_learn_from_error_with_counts_makes_the_same_prompt_not_fit() -> None:
    learner = RatioLearner(initial_ratio=1.05)
    info = parse_context_error(
        "maximum context length is 2048 tokens. However, you requested 2301 tokens "
        "(1789 in the messages, 512 in the completion)."
    )
    learner.learn_from_error("smol", 1500, info, max_tokens=512)
    assert learner.estimate("smol", 1500) >= 1789
    assert learner.estimate("smol", 1500) + 512 > 2048
    assert learner.window("smol") == 2048


def test_learn_from_error_total_only_uses_our_max_tokens() -> None:
    learner = RatioLearner(initial_ratio=1.0)
    learner.learn_from_error("e", 1000, parse_context_error("you requested 1700 tokens"), max_tokens=500)
    assert learner.estimate("e", 1000) >= 1200


def test_learn_from_error_without_counts_tightens_blindly() -> None:
    learner = RatioLearner(initial_ratio=1.0, tighten_factor=1.25)
    learner.learn_from_error("e", 1000, parse_context_error("the request exceeds the available context size"))
    assert learner.ratio("e") == pytest.approx(1.25)

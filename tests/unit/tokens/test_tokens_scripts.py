"""Script profiles: every cl100k token of a text counted for the class of what it spells."""

# ruff: noqa: RUF001  (texts in many scripts on purpose: full-width commas, Greek, Arabic)

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pytest_iterate.tokens.counter import TokenCounter
from pytest_iterate.tokens.scripts import SCRIPTS, ScriptProfile, char_class, classify_token_bytes

COUNTER = TokenCounter()


@pytest.mark.parametrize(
    ("ch", "script"),
    [
        ("a", "latin"),
        ("é", "latin"),
        ("7", "digits"),
        ("(", "punct"),
        ("—", "punct"),
        ("“", "punct"),
        (" ", "space"),
        ("\n", "space"),
        ("中", "cjk"),
        ("の", "cjk"),
        ("한", "cjk"),
        ("。", "cjk"),
        ("Ａ", "cjk"),
        ("😀", "symbols"),
        ("✅", "symbols"),
        ("\u200d", "symbols"),
        ("\ufe0f", "symbols"),
        ("→", "symbols"),
        ("Ж", "other"),
        ("α", "other"),
        ("ا", "other"),
        ("क", "other"),
    ],
)
def test_char_classes(ch: str, script: str) -> None:
    assert SCRIPTS[char_class(ch)] == script


@pytest.mark.parametrize(
    ("text", "dominant"),
    [
        ("The component validates every argument and raises a documented exception.", "latin"),
        ("每个操作都会校验参数，遇到错误输入时抛出有文档说明的异常。", "cjk"),
        ("🚀🎉👩‍💻✅🍕🔥", "symbols"),
        ("Каждая операция проверяет аргументы", "other"),
        ("3141592653589793238462643383279", "digits"),
        ("{[()]};:!?<>==>>=//**&&||", "punct"),
    ],
)
def test_profile_counts_a_text_for_its_script(text: str, dominant: str) -> None:
    profile = COUNTER.profile(text)
    assert profile.total == COUNTER.count_text(text)
    assert max(profile.nonzero(), key=lambda k: profile[k]) == dominant
    assert profile[dominant] >= 0.75 * profile.total


def test_byte_pieces_of_a_character_count_for_its_class() -> None:
    # cl100k cuts many emoji and rare CJK characters into pieces of their UTF-8 bytes
    assert SCRIPTS[classify_token_bytes(b"\xf0\x9f\x98")] == "symbols"
    assert SCRIPTS[classify_token_bytes(b"\xe9\xbe")] == "cjk"
    assert SCRIPTS[classify_token_bytes(b"\xe2\x9c")] == "symbols"
    assert classify_token_bytes(b"\x80") == -1  # continuation bytes only: the class before it
    woman_coding = COUNTER.profile("👩‍💻")  # 7 tokens, most of them byte pieces
    assert woman_coding.nonzero() == {"symbols": COUNTER.count_text("👩‍💻")}
    rare = COUNTER.profile("龘龘龘")
    assert rare.nonzero() == {"cjk": COUNTER.count_text("龘龘龘")}


def test_a_token_of_several_classes_counts_for_the_costlier() -> None:
    assert SCRIPTS[classify_token_bytes(b" 12")] == "digits"
    assert SCRIPTS[classify_token_bytes(b"(x")] == "punct"
    assert SCRIPTS[classify_token_bytes(b"    ")] == "space"
    assert SCRIPTS[classify_token_bytes(b" \xe4\xb8\xad")] == "cjk"


TEXTS = st.text(
    alphabet=st.sampled_from([*list("ab Z9.(\n\t"), "中", "文", "😀", "👍", "é", "Ж", "\u200d", "—", "龘"]),
    max_size=200,
)


@settings(max_examples=200, deadline=None)
@given(TEXTS)
def test_profile_total_is_the_cl100k_count(text: str) -> None:
    profile = COUNTER.profile(text)
    assert profile.total == COUNTER.count_text(text)
    assert profile["template"] == 0
    assert all(n >= 0 for n in profile.counts)


def test_profile_messages_puts_the_chat_format_in_template() -> None:
    messages = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "中文 and English", "name": "bob"},
        {"role": "user", "content": [{"type": "text", "text": "part one"}, {"type": "image_url", "x": 1}]},
    ]
    profile = COUNTER.profile_messages(messages)
    assert profile.total == COUNTER.count_messages(messages)
    contents = sum(COUNTER.count_content(m["content"]) for m in messages)
    assert profile["template"] == COUNTER.count_messages(messages) - contents
    assert profile.content_total == contents and profile["cjk"] >= 1


def test_profile_values_and_errors() -> None:
    p = ScriptProfile.of(latin=3, cjk=2) + ScriptProfile.of(template=5)
    assert (p.total, p.content_total, p.nonzero()) == (10, 5, {"latin": 3, "cjk": 2, "template": 5})
    assert p.with_template(2)["template"] == 7
    with pytest.raises(ValueError, match="unknown script class\\(es\\) greek"):
        ScriptProfile.of(greek=1)
    with pytest.raises(ValueError, match="8 counts"):
        ScriptProfile((1, 2))

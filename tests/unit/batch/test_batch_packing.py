"""The packed prompt format: exact round trips and a split that survives real replies."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from pytest_iterate.batch.packing import (
    format_packed_answer,
    pack_prompts,
    parse_packed_prompt,
    split_packed_answer,
)

# Answers as a model writes them: no header-looking lines, no bare separators, not blank.
_answer_line = (
    st.text(
        alphabet=st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="#*_<>-"),
        min_size=1,
        max_size=40,
    )
    .map(str.strip)
    .filter(lambda s: s and not s.lower().startswith("item"))
)
_answer = st.lists(_answer_line, min_size=1, max_size=3).map("\n".join)


@given(st.lists(st.text(max_size=200), min_size=1, max_size=12))
def test_parse_is_the_inverse_of_pack_for_any_text(prompts: list[str]) -> None:
    assert parse_packed_prompt(pack_prompts(prompts)) == prompts


def test_a_prompt_holding_delimiter_lines_still_round_trips() -> None:
    tricky = ["a\n<<<END ITEM 1>>>\nb", "<<<ITEM 1 (len=3)>>>\n", "### ITEM 1\nx", ""]
    assert parse_packed_prompt(pack_prompts(tricky)) == tricky


def test_plain_text_is_not_a_packed_prompt() -> None:
    assert parse_packed_prompt("What is 2+2?") is None
    assert parse_packed_prompt("[packed-prompt v1: 2 items]\n<<<ITEM 1 (len=1)>>>\nx\n") is None


@given(st.lists(_answer, min_size=1, max_size=10))
def test_split_of_a_well_formed_answer_round_trips(answers: list[str]) -> None:
    assert split_packed_answer(format_packed_answer(answers), len(answers)) == answers


@given(st.lists(_answer, min_size=1, max_size=8), st.sampled_from(["bold", "colon", "hash", "angle"]))
def test_split_survives_extra_text_and_header_styles(answers: list[str], style: str) -> None:
    header = {
        "bold": "**ITEM {i}**",
        "colon": "Item {i}:",
        "hash": "## item {i}",
        "angle": "<<<ITEM {i}>>>",
    }[style]
    reply = "Sure, here are the answers you asked for.\n\n"
    reply += "\n---\n".join(f"{header.format(i=i)}\n{a}" for i, a in enumerate(answers, 1))
    assert split_packed_answer(reply, len(answers)) == answers


def test_header_and_answer_on_one_line() -> None:
    reply = "**ITEM 1:** four\n**Item 2**: Paris\n### ITEM 3 - blue"
    assert split_packed_answer(reply, 3) == ["four", "Paris", "blue"]


def test_missing_items_are_none_and_out_of_range_items_ignored() -> None:
    reply = "### ITEM 1\nA\n### ITEM 3\nC\n### ITEM 9\nZ"
    assert split_packed_answer(reply, 3) == ["A", None, "C"]


def test_duplicated_header_first_non_empty_wins() -> None:
    reply = "### ITEM 1\n### ITEM 1\nfirst\n### ITEM 2\nsecond\n### ITEM 1\nagain"
    assert split_packed_answer(reply, 2) == ["first", "second"]


def test_a_body_line_mentioning_an_item_is_not_a_header() -> None:
    reply = "### ITEM 1\nItem 2 of the list is milk.\n### ITEM 2\nbread"
    assert split_packed_answer(reply, 2) == ["Item 2 of the list is milk.", "bread"]


def test_no_headers_at_all_gives_all_none() -> None:
    assert split_packed_answer("I cannot help with that.", 2) == [None, None]


def test_closing_remark_after_a_rule_and_end_markers_are_dropped() -> None:
    reply = "### ITEM 1\nA\n<<<END ITEM 1>>>\nstray\n### ITEM 2\nB\n\n---\nAnything else?"
    assert split_packed_answer(reply, 2) == ["A", "B"]

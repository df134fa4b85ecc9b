"""Cache keys: stable under reordering, sensitive to everything that changes the output."""

from __future__ import annotations

import pytest

from pytest_iterate.cache.keys import (
    DENY_FIELDS,
    cache_key,
    cache_key_from_body,
    normalize_base_url,
)
from pytest_iterate.client.errors import CacheError
from pytest_iterate.client.types import LLMRequest

BASE = "http://127.0.0.1:8000/v1"
BODY = {
    "model": "gpt-4o-mini",
    "messages": [{"role": "system", "content": "be terse"}, {"role": "user", "content": "2+2?"}],
    "temperature": 0,
    "top_p": 1,
    "max_tokens": 64,
    "seed": 7,
}


def test_key_has_version_prefix_and_is_stable() -> None:
    key = cache_key_from_body(BASE, BODY)
    assert key.startswith("v1:") and len(key) == 3 + 64
    assert key == cache_key_from_body(BASE, dict(BODY))


def test_reordered_keys_hit() -> None:
    reordered = dict(reversed(list(BODY.items())))
    reordered["messages"] = [dict(reversed(list(m.items()))) for m in BODY["messages"]]
    assert cache_key_from_body(BASE, reordered) == cache_key_from_body(BASE, BODY)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("temperature", 0.2),
        ("top_p", 0.9),
        ("max_tokens", 65),
        ("seed", 8),
        ("model", "other-model"),
        ("stop", ["\n"]),
        ("presence_penalty", 0.1),
        ("frequency_penalty", 0.1),
        ("n", 2),
        ("logit_bias", {"50256": -100}),
        ("response_format", {"type": "json_object"}),
        ("a_param_invented_next_year", True),
    ],
)
def test_any_sampling_or_unknown_param_change_misses(field: str, value: object) -> None:
    changed = {**BODY, field: value}
    assert cache_key_from_body(BASE, changed) != cache_key_from_body(BASE, BODY)


def test_prompt_content_and_base_url_change_the_key() -> None:
    other = {**BODY, "messages": [{"role": "user", "content": "2+3?"}]}
    assert cache_key_from_body(BASE, other) != cache_key_from_body(BASE, BODY)
    assert cache_key_from_body("http://127.0.0.1:8001/v1", BODY) != cache_key_from_body(BASE, BODY)


@pytest.mark.parametrize("field", sorted(DENY_FIELDS))
def test_fields_that_do_not_change_the_output_are_ignored(field: str) -> None:
    assert cache_key_from_body(BASE, {**BODY, field: "x"}) == cache_key_from_body(BASE, BODY)


def test_api_key_change_does_not_miss(monkeypatch: pytest.MonkeyPatch) -> None:
    request = LLMRequest(messages=({"role": "user", "content": "hi"},), params={"temperature": 0})
    monkeypatch.setenv("OPENAI_API_KEY", "sk-first-key-123")
    first = cache_key(request, base_url=BASE, default_model="m")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-second-key-456")
    assert cache_key(request, base_url=BASE, default_model="m") == first
    # credentials in the URL are dropped too
    with_creds = "https://user:sk-secret@api.example.com/v1?api-key=sk-secret&api-version=2024"
    other_creds = "https://u2:sk-other@API.example.com:443/v1/?api-key=sk-other&api-version=2024"
    assert normalize_base_url(with_creds) == normalize_base_url(other_creds)
    assert "sk-" not in normalize_base_url(with_creds)
    assert "api-version=2024" in normalize_base_url(with_creds)


def test_stream_flag_shares_the_key_and_int_float_agree() -> None:
    plain = LLMRequest(messages=({"role": "user", "content": "hi"},), params={"temperature": 0})
    streamed = plain.replace(stream=True, params={"temperature": 0.0})
    assert cache_key(plain, base_url=BASE, default_model="m") == cache_key(
        streamed, base_url=BASE, default_model="m"
    )


def test_default_model_is_part_of_the_key() -> None:
    request = LLMRequest(prompt="hi", endpoint="completions", params={"seed": 1})
    assert cache_key(request, base_url=BASE, default_model="a") != cache_key(
        request, base_url=BASE, default_model="b"
    )
    named = request.replace(model="a")
    assert cache_key(named, base_url=BASE, default_model="b") == cache_key(
        request, base_url=BASE, default_model="a"
    )


@pytest.mark.parametrize("field", ["messages", "logit_bias"])
def test_a_body_that_is_not_plain_json_is_a_cache_error(field: str) -> None:
    loop: dict[str, object] = {"role": "user"}
    loop["content"] = loop  # a cycle: in a text field and in a canonicalized one
    with pytest.raises(CacheError, match="not plain JSON"):
        cache_key_from_body(BASE, {**BODY, field: [loop]})
    with pytest.raises(CacheError, match="not plain JSON"):
        cache_key_from_body(BASE, {**BODY, field: {1, 2}})

"""The OpenAI wire protocol alone: bytes in, LLMResponse or a typed error out, no server."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable

import pytest

from pytest_iterate.client.errors import BadResponse, ClientError, RateLimited, ServerError, StreamError
from pytest_iterate.client.secret import Secret
from pytest_iterate.client.types import LLMRequest, Usage
from pytest_iterate.client.wire import Reply, StreamAccumulator, encode_body, parse_body

URL = "http://127.0.0.1:8000/v1/chat/completions"
CHAT = LLMRequest(messages=({"role": "user", "content": "hi"},), max_tokens=8)
LIST = LLMRequest(prompt=("a", "b"), endpoint="completions")


def sse(payload: object) -> bytes:
    return b"data: " + json.dumps(payload).encode() + b"\n\n"


def ticking(on_delta: Callable[[str], None] | None = None) -> StreamAccumulator:
    ticks = itertools.count(1)
    return StreamAccumulator(
        CHAT, Reply(URL, 200), started=0.0, clock=lambda: float(next(ticks)), on_delta=on_delta
    )


def test_encode_body_is_the_requests_json_with_the_default_model() -> None:
    assert json.loads(encode_body(CHAT, "m")) == {
        "model": "m",
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 8,
    }
    assert json.loads(encode_body(CHAT.replace(model="own"), "m"))["model"] == "own"


def test_parse_body_chat_reads_text_finish_usage_model() -> None:
    raw = json.dumps(
        {
            "model": "m1",
            "choices": [{"message": {"content": "yo"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 1},
        }
    ).encode()
    r = parse_body(CHAT, raw, Reply(URL, 200))
    assert (r.text, r.finish_reason, r.model, r.usage) == ("yo", "stop", "m1", Usage(3, 1))
    assert r.raw is not None and r.raw["model"] == "m1"


def test_parse_body_list_prompt_orders_texts_by_index() -> None:
    raw = json.dumps({"choices": [{"index": 1, "text": "B"}, {"index": 0, "text": "A"}]}).encode()
    r = parse_body(LIST, raw, Reply(URL, 200))
    assert r.texts == ["A", "B"] and r.text == "A"


@pytest.mark.parametrize(
    ("raw", "why", "retryable"),
    [
        (b"<html>", "a body that is not JSON", True),
        (b"[1, 2]", "JSON that is not an object", False),
        (b'{"choices": []}', "no choices", False),
        (b'{"choices": [{"text": "x"}]}', "a choice missing a field", False),
    ],
)
def test_parse_body_errors_name_url_status_and_first_bytes(raw: bytes, why: str, retryable: bool) -> None:
    with pytest.raises(BadResponse) as info:
        parse_body(CHAT, raw, Reply(URL, 200))
    err = info.value
    assert not isinstance(err, StreamError)
    assert str(err).startswith(f"{URL} answered HTTP 200 with {why}") and repr(raw[:80]) in str(err)
    assert (err.url, err.status, err.body, err.retryable) == (URL, 200, raw, retryable)


def test_list_prompt_with_a_missing_choice_is_bad_response() -> None:
    raw = json.dumps({"choices": [{"index": 0, "text": "A"}]}).encode()
    with pytest.raises(BadResponse, match="2 prompts but 1 choices"):
        parse_body(LIST, raw, Reply(URL, 200))


@pytest.mark.parametrize(
    ("status", "cls"), [(429, RateLimited), (503, ServerError), (529, ServerError), (404, ClientError)]
)
def test_status_error_reads_the_openai_error_body(status: int, cls: type[Exception]) -> None:
    body = json.dumps({"error": {"message": "nope", "type": "invalid_request_error"}}).encode()
    err = Reply(URL, status).status_error({"retry-after-ms": "250"}, body)
    assert type(err) is cls and err.status == status
    assert err.code == "invalid_request_error" and str(err) == f"{URL} answered HTTP {status}: nope"
    assert err.retry_after_s == 0.25


def test_status_error_without_json_shows_the_first_bytes() -> None:
    err = Reply(URL, 502).status_error({}, b"<html>Bad gateway</html>")
    assert str(err) == f"{URL} answered HTTP 502: b'<html>Bad gateway</html>'" and err.code is None


def test_errors_mask_the_secrets_the_endpoint_echoes() -> None:
    key = Secret("sk-echoed-0123")
    body = json.dumps({"error": {"message": "bad key sk-echoed-0123", "code": "invalid_api_key"}}).encode()
    err = Reply(URL, 401, (key,)).status_error({}, body)
    assert "sk-echoed" not in str(err) and b"sk-echoed" not in err.body and "bad key ***" in str(err)
    bad = Reply(URL, 200, (key,)).bad(b"<p>sk-echoed-0123</p>", "a body that is not JSON", retryable=True)
    assert "sk-echoed" not in str(bad) and bad.body == b"<p>***</p>"


def test_stream_accumulator_times_deltas_from_the_start_and_reads_usage() -> None:
    got: list[str] = []
    acc = ticking(got.append)
    assert not acc.feed(sse({"model": "m", "choices": [{"delta": {"content": "Hel"}}]}) + b"da")
    assert not acc.feed(b"ta: " + json.dumps({"choices": [{"delta": {"content": "lo"}}]}).encode() + b"\n\n")
    assert not acc.feed(sse({"choices": [{"delta": {}, "finish_reason": "stop"}]}))
    usage = {"prompt_tokens": 2, "completion_tokens": 2}
    assert acc.feed(sse({"choices": [], "usage": usage}) + b"data: [DONE]\n\n")
    r = acc.finish()
    assert (r.text, r.chunks, got) == ("Hello", ["Hel", "lo"], ["Hel", "lo"])
    assert (r.finish_reason, r.model) == ("stop", "m")
    assert r.chunk_times_s == [1.0, 2.0] and r.ttft_s == 1.0 and r.total_s == 3.0
    assert r.usage == Usage(2, 2)


def test_stream_accumulator_splits_a_list_prompt_by_index_and_shows_only_prompt_0() -> None:
    got: list[str] = []
    acc = StreamAccumulator(LIST, Reply(URL, 200), started=0.0, clock=lambda: 0.0, on_delta=got.append)
    acc.feed(sse({"choices": [{"index": 1, "text": "B"}, {"index": 0, "text": "A"}]}))
    acc.feed(sse({"choices": [{"index": 0, "text": "a"}]}) + b"data: [DONE]\n\n")
    r = acc.finish()
    assert r.texts == ["Aa", "B"] and r.text == "Aa" and got == ["A", "a"]


def test_stream_choice_index_outside_the_prompts_is_bad_response() -> None:
    acc = StreamAccumulator(LIST, Reply(URL, 200), started=0.0, clock=lambda: 0.0)
    with pytest.raises(BadResponse, match=r"index 2 outside 0\.\.1") as info:
        acc.feed(sse({"choices": [{"index": 2, "text": "x"}]}))
    assert not info.value.retryable


def test_stream_without_done_is_stream_error_naming_the_url() -> None:
    acc = ticking()
    acc.feed(sse({"choices": [{"delta": {"content": "par"}}]}))
    with pytest.raises(StreamError, match=r"before \[DONE\]") as info:
        acc.finish()
    assert info.value.url == URL and info.value.status == 200


def test_the_consumers_own_error_in_on_delta_is_not_taken_for_a_bad_answer() -> None:
    def refuse(delta: str) -> None:
        raise ValueError(f"consumer refused {delta!r}")

    acc = StreamAccumulator(CHAT, Reply(URL, 200), started=0.0, clock=lambda: 0.0, on_delta=refuse)
    with pytest.raises(ValueError, match="consumer refused 'x'") as info:
        acc.feed(sse({"choices": [{"delta": {"content": "x"}}]}))
    assert not isinstance(info.value, BadResponse)


@pytest.mark.parametrize(
    ("event", "why"),
    [
        ({"choices": [{"delta": {"content": 7}}]}, "delta.content is int"),
        ({"choices": "abc"}, "choices is str"),
        ({"choices": [["x"]]}, "a choice is list"),
        ({"usage": {"prompt_tokens": "many"}}, "invalid literal"),
        ({"model": {"name": "m"}}, "model is dict"),
    ],
)
def test_a_stream_event_of_the_wrong_types_is_bad_response_naming_the_field(
    event: dict[str, object], why: str
) -> None:
    with pytest.raises(BadResponse, match=f"a malformed stream event .*{why}") as info:
        ticking().feed(sse(event))
    assert not info.value.retryable and not isinstance(info.value, StreamError)


def test_a_stream_event_without_choices_is_fine() -> None:
    acc = ticking()
    acc.feed(sse({"choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": 0}}))
    acc.feed(sse({"choices": None}))
    acc.feed(b"data: [DONE]\n\n")
    assert acc.finish().usage == Usage(1, 0)

"""The service's side of the OpenAI wire format: requests parsed, answers and errors rendered."""

from __future__ import annotations

import json
from typing import Any

import pytest

from pytest_iterate.client.errors import (
    BadResponse,
    Busy,
    ClientError,
    ConfigError,
    ConnectError,
    ContextOverflow,
    RateLimited,
    RequestTimeout,
    ServerError,
)
from pytest_iterate.client.types import GuardWarning, LLMRequest, LLMResponse, Usage
from pytest_iterate.service.protocol import (
    InvalidRequest,
    StreamIds,
    chunk,
    completion_body,
    error_for,
    parse_request,
    retry_after_headers,
)


def test_everything_but_the_fields_the_service_reads_is_passed_on() -> None:
    body = {
        "model": "m",
        "messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}],
        "max_completion_tokens": 7,
        "stream": True,
        "stream_options": {"include_usage": True},
        "temperature": 0.2,
        "seed": 3,
        "stop": ["\n"],
    }
    r = parse_request("chat", body)
    assert r.max_tokens == 7 and r.stream and r.model == "m" and len(r.messages) == 2
    assert dict(r.params) == {"temperature": 0.2, "seed": 3, "stop": ["\n"]}
    listed = parse_request("completions", {"prompt": ["a", "b"]})
    assert listed.prompt == ("a", "b") and listed.endpoint == "completions" and listed.model is None


@pytest.mark.parametrize(
    ("route", "body", "param"),
    [
        ("chat", [1, 2], None),
        ("chat", {"messages": []}, "messages"),
        ("chat", {"messages": ["hi"]}, "messages[0]"),
        ("chat", {"messages": [{"role": "user"}], "model": ""}, "model"),
        ("chat", {"messages": [{"role": "user"}], "max_tokens": True}, "max_tokens"),
        ("chat", {"messages": [{"role": "user"}], "max_completion_tokens": 1.5}, "max_completion_tokens"),
        ("chat", {"messages": [{"role": "user"}], "n": 3}, "n"),
        ("completions", {"prompt": []}, "prompt"),
        ("completions", {"prompt": ["a", 1]}, "prompt"),
    ],
)
def test_a_bad_body_names_the_field(route: Any, body: Any, param: str | None) -> None:
    with pytest.raises(InvalidRequest) as info:
        parse_request(route, body)
    assert info.value.param == param
    reply = error_for(info.value)
    assert reply.status == 400 and reply.body["error"]["param"] == param


def test_answers_are_shaped_as_openai_shapes_them() -> None:
    chat_req = LLMRequest(messages=({"role": "user", "content": "x"},))
    warned = GuardWarning("truncate", "cut", tokens_before=10, tokens_after=5)
    response = LLMResponse("hello", "length", Usage(3, 2), "m-1", warnings=[warned], cache_tier="disk")
    body = completion_body(chat_req, response, "default")
    assert (
        body["object"] == "chat.completion" and body["id"].startswith("chatcmpl-") and body["model"] == "m-1"
    )
    assert body["choices"] == [
        {"index": 0, "message": {"role": "assistant", "content": "hello"}, "finish_reason": "length"}
    ]
    assert body["usage"] == {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
    assert body["iterate"] == {"cache": "disk", "attempts": 1, "warnings": [warned.to_json()]}
    listed = LLMRequest(prompt=("a", "b"), endpoint="completions")
    body = completion_body(listed, LLMResponse("A", "stop", texts=["A", "B"]), "default")
    assert [c["text"] for c in body["choices"]] == ["A", "B"] and "usage" not in body
    assert body["object"] == "text_completion" and body["model"] == "default"


def test_stream_chunks() -> None:
    req = LLMRequest(messages=({"role": "user", "content": "x"},), stream=True)
    ids = StreamIds("chatcmpl-1", 5, "m")
    delta = json.loads(chunk(req, ids, delta="he")[len(b"data: ") :])
    assert delta["choices"] == [{"index": 0, "delta": {"content": "he"}, "finish_reason": None}]
    final = json.loads(chunk(req, ids, finish_reason="stop")[len(b"data: ") :])
    assert final["choices"][0]["finish_reason"] == "stop" and final["choices"][0]["delta"] == {}
    usage = json.loads(chunk(req, ids, response=LLMResponse("he", usage=Usage(1, 1)), usage_only=True)[6:])
    assert (
        usage["choices"] == [] and usage["usage"]["total_tokens"] == 2 and usage["iterate"]["cache"] == "miss"
    )


@pytest.mark.parametrize(
    ("exc", "status", "code", "retry_ms"),
    [
        (Busy("full", retry_after_s=0.0123), 503, "busy", "13"),
        (Busy("full", retry_after_s=2.5), 503, "busy", "2500"),
        (ContextOverflow("too long"), 400, "context_length_exceeded", None),
        (ConfigError("bad policy"), 400, None, None),
        (
            RateLimited("u answered 429", status=429, retry_after_s=1.0, code="rate_limit_exceeded"),
            429,
            "rate_limit_exceeded",
            "1000",
        ),
        (ClientError("u answered 401", status=401, code="invalid_api_key"), 401, "invalid_api_key", None),
        (ServerError("u answered 503", status=503), 502, "upstream_error", None),
        (RequestTimeout("slow"), 504, "upstream_timeout", None),
        (ConnectError("refused"), 502, "upstream_error", None),
        (BadResponse("garbled"), 502, "upstream_error", None),
        (KeyError("oops"), 500, None, None),
    ],
)
def test_errors_map_to_statuses_codes_and_retry_after(
    exc: BaseException, status: int, code: str | None, retry_ms: str | None
) -> None:
    reply = error_for(exc)
    assert reply.status == status and reply.body["error"]["code"] == code
    assert reply.headers.get("retry-after-ms") == retry_ms
    if retry_ms is not None:
        assert int(reply.headers["Retry-After"]) >= 1
    assert "oops" not in json.dumps(reply.body)  # an internal error shows its kind, not its content


def test_retry_after_is_whole_seconds_at_least_one_and_exact_in_milliseconds() -> None:
    assert retry_after_headers(0.0004) == {"Retry-After": "1", "retry-after-ms": "1"}
    assert retry_after_headers(3.2) == {"Retry-After": "4", "retry-after-ms": "3200"}

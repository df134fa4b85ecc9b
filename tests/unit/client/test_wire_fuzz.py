"""Malformed bytes into the SSE decoder and the response parser: only typed errors come out.

Whatever an endpoint sends (random bytes cut anywhere, SSE lines in any order, JSON of
any shape and type, nesting too deep to parse), the decoder raises only
:class:`StreamError`, the parser only :class:`BadResponse` (StreamError included), and
what they return is well typed. Each example runs under a wall-clock alarm, so a loop
that never ends fails the test instead of hanging it.
"""

from __future__ import annotations

import contextlib
import copy
import json
import signal
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from pytest_iterate.client.errors import BadResponse, StreamError
from pytest_iterate.client.sse import StreamDecoder
from pytest_iterate.client.types import LLMRequest, LLMResponse, Usage
from pytest_iterate.client.wire import Reply, StreamAccumulator, parse_body

LIMIT_S = 10.0  # per example; each takes milliseconds, so only a hang (or a stall) reaches it
FUZZ = settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
URL = "http://127.0.0.1:8000/v1/chat/completions"
REQUESTS = [
    LLMRequest(messages=({"role": "user", "content": "hi"},)),
    LLMRequest(prompt="hi", endpoint="completions"),
    LLMRequest(prompt=("a", "b", "c"), endpoint="completions"),
]
DEEP = b"[" * 100_000 + b"]" * 100_000  # nested past the recursion limit of json.loads


class Hang(Exception):
    """An example ran past :data:`LIMIT_S`."""


@contextlib.contextmanager
def time_limit(seconds: float = LIMIT_S) -> Iterator[None]:
    def alarm(signum: int, frame: object) -> None:
        raise Hang(f"an example ran over {seconds:g}s")

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def test_the_time_limit_stops_a_loop_that_never_ends() -> None:
    with pytest.raises(Hang), time_limit(0.05):
        while True:
            pass


# -- strategies ------------------------------------------------------------------------
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=12,
)
odd = st.sampled_from([1e308 * 10, -1e400, 2**70, "", "stop"]) | st.builds(list) | st.builds(dict)
anything = json_values | odd


def maybe(key: str, values: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    return st.one_of(st.just({}), values.map(lambda v: {key: v}))


def merged(*parts: st.SearchStrategy[dict[str, Any]]) -> st.SearchStrategy[dict[str, Any]]:
    return st.tuples(*parts).map(lambda ds: {k: v for d in ds for k, v in d.items()})


# OpenAI-shaped objects whose every field may hold any value ("wild")
wild_choice = merged(
    maybe("index", st.integers(-2, 4) | anything),
    maybe("message", merged(maybe("content", st.text(max_size=8) | anything)) | anything),
    maybe("delta", merged(maybe("content", st.text(max_size=8) | anything)) | anything),
    maybe("text", st.text(max_size=8) | anything),
    maybe("finish_reason", st.sampled_from(["stop", "length", None]) | anything),
)
wild_usage = merged(
    maybe("prompt_tokens", st.integers(0, 10**6) | anything),
    maybe("completion_tokens", st.integers(0, 10**6) | anything),
)
wild_payload = merged(
    maybe("choices", st.lists(wild_choice | anything, max_size=3) | anything),
    maybe("usage", wild_usage | anything),
    maybe("model", st.text(max_size=6) | anything),
    maybe("error", anything),
)


def valid_payload(which: int, *, stream: bool) -> st.SearchStrategy[dict[str, Any]]:
    """An answer (or one stream event) as the API promises it, for ``REQUESTS[which]``."""
    prompt = REQUESTS[which].prompt
    n = len(prompt) if isinstance(prompt, tuple) else 1
    text = st.text(max_size=8)
    if REQUESTS[which].endpoint == "chat":
        key = "delta" if stream else "message"
        one = st.fixed_dictionaries({"index": st.just(0), key: st.fixed_dictionaries({"content": text})})
    else:
        one = st.fixed_dictionaries({"text": text})
    finish = st.sampled_from(["stop", "length", None])
    choices = st.tuples(st.permutations(range(n)), st.lists(one, min_size=n, max_size=n), finish).map(
        lambda t: [{**c, "index": i, "finish_reason": t[2]} for i, c in zip(t[0], t[1], strict=True)]
    )
    count = st.integers(0, 999)
    usage = st.fixed_dictionaries({"prompt_tokens": count, "completion_tokens": count})
    return st.fixed_dictionaries(
        {"choices": choices}, optional={"usage": usage, "model": st.text(max_size=6)}
    )


PATHS = [
    ("choices",), ("choices", 0), ("choices", 0, "message"), ("choices", 0, "message", "content"),
    ("choices", 0, "delta"), ("choices", 0, "delta", "content"), ("choices", 0, "text"),
    ("choices", 0, "index"), ("choices", 0, "finish_reason"), ("usage",), ("usage", "prompt_tokens"),
    ("model",), ("error",),
]  # fmt: skip
DELETE = object()


def corrupted(valid: st.SearchStrategy[dict[str, Any]]) -> st.SearchStrategy[dict[str, Any]]:
    """A valid payload with one or two fields replaced by any value, or deleted."""

    def apply(args: tuple[dict[str, Any], list[tuple[tuple[Any, ...], Any]]]) -> dict[str, Any]:
        payload, changes = copy.deepcopy(args[0]), args[1]
        for path, value in changes:
            parent: Any = payload
            for step in path[:-1]:
                try:
                    parent = parent[step]
                except (KeyError, IndexError, TypeError):
                    break
            else:
                last = path[-1]
                in_list = isinstance(parent, list) and isinstance(last, int) and last < len(parent)
                if isinstance(parent, dict):
                    if value is DELETE:
                        parent.pop(last, None)
                    else:
                        parent[last] = copy.deepcopy(value)
                elif in_list and value is not DELETE:
                    parent[last] = copy.deepcopy(value)
        return payload

    change = st.tuples(st.sampled_from(PATHS), anything | st.just(DELETE))
    return st.tuples(valid, st.lists(change, min_size=1, max_size=2)).map(apply)


def payloads(which: int, *, stream: bool) -> st.SearchStrategy[dict[str, Any]]:
    valid = valid_payload(which, stream=stream)
    return st.one_of(valid, corrupted(valid), wild_payload)


def bodies(which: int) -> st.SearchStrategy[bytes]:
    encoded = payloads(which, stream=False).map(lambda p: json.dumps(p).encode())
    return st.one_of(
        encoded,
        encoded.flatmap(lambda raw: st.integers(0, len(raw)).map(lambda n: raw[:n])),  # cut short
        json_values.map(lambda v: json.dumps(v).encode()),
        st.binary(max_size=300),
    )


line_end = st.sampled_from([b"\n", b"\r\n", b"\r"])
sse_line = st.one_of(
    payloads(0, stream=True).map(lambda p: b"data: " + json.dumps(p).encode()),
    json_values.map(lambda v: b"data:" + json.dumps(v).encode()),
    st.sampled_from([b"data: [DONE]", b"event: error", b"event: message", b": ping", b"", b"id: 1"]),
    st.binary(max_size=40),
    st.text(max_size=20).map(lambda t: ("data: " + t).encode("utf-8", "surrogatepass")),
)
sse_bodies = st.tuples(
    st.lists(st.tuples(sse_line, line_end).map(b"".join), max_size=12).map(b"".join),
    st.sampled_from([b"", b"data: [DONE]\n\n", b"data:[DONE]"]),
).map(b"".join)


def chunked(body: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(body) + 1) for c in cuts})
    return [body[a:b] for a, b in zip([0, *points], [*points, len(body)], strict=True)]


def check_response(r: LLMResponse) -> None:
    """A returned response is well typed, whatever came in."""
    assert isinstance(r.text, str)
    assert r.finish_reason is None or isinstance(r.finish_reason, str)
    assert r.model is None or isinstance(r.model, str)
    assert r.usage is None or (
        isinstance(r.usage, Usage)
        and isinstance(r.usage.prompt_tokens, int)
        and isinstance(r.usage.completion_tokens, int)
    )
    assert all(isinstance(c, str) for c in r.chunks) and len(r.chunks) == len(r.chunk_times_s)
    assert r.texts is None or all(isinstance(t, str) for t in r.texts)


# -- the tests -------------------------------------------------------------------------
@pytest.mark.parametrize(
    "body",
    [b"data: " + DEEP, b"event: error\ndata: " + DEEP, b'data: {"error": ' + DEEP + b"}"],
    ids=["data", "error-event", "error-payload"],
)
def test_stream_data_nested_too_deep_is_a_stream_error(body: bytes) -> None:
    with pytest.raises(StreamError) as info, time_limit():
        StreamDecoder(url=URL, status=200).feed(body + b"\n\n")
    assert len(str(info.value)) < 400 and len(info.value.body) <= 200


@pytest.mark.parametrize("raw", [DEEP, b'{"choices": ' + DEEP + b"}"], ids=["array", "in-an-object"])
def test_a_body_nested_too_deep_is_a_retryable_bad_response(raw: bytes) -> None:
    with pytest.raises(BadResponse, match="not JSON") as info, time_limit():
        parse_body(REQUESTS[0], raw, Reply(URL, 200))
    assert info.value.retryable and len(str(info.value)) < 400


def test_an_error_body_nested_too_deep_still_maps_to_its_status() -> None:
    from pytest_iterate.client.errors import ServerError

    with time_limit():
        err = Reply(URL, 503).status_error({}, b'{"error": {"message": ' + DEEP + b"}}")
    assert isinstance(err, ServerError) and err.status == 503 and len(str(err)) < 400


@FUZZ
@given(body=st.binary(max_size=2000) | sse_bodies, cuts=st.lists(st.integers(0, 4000), max_size=20))
@example(body=b"data: \xff\xfe\x00\r\r\n\ndata: [DONE]", cuts=[1, 2, 3])
def test_the_sse_decoder_raises_only_stream_error(body: bytes, cuts: list[int]) -> None:
    decoder = StreamDecoder(url=URL, status=200)
    with time_limit():
        try:
            for chunk in chunked(body, cuts):
                for p in decoder.feed(chunk):
                    assert isinstance(p, dict)
            for p in decoder.close():
                assert isinstance(p, dict)
        except StreamError as exc:
            assert exc.url == URL and exc.status == 200
            event(f"StreamError: {str(exc).split(': ', 1)[0][len(URL) + 1 :][:30]}")
        else:
            event("decoded to the end")


@FUZZ
@given(case=st.sampled_from(range(len(REQUESTS))).flatmap(lambda w: st.tuples(bodies(w), st.just(w))))
@example(case=(b'{"choices": [{"message": {"content": "x"}}], "usage": {"prompt_tokens": 1e999}}', 0))
@example(case=(b'{"choices": [{"message": {"content": "x"}}], "usage": {"prompt_tokens": NaN}}', 0))
@example(case=(b'{"choices": [{"message": {"content": 7}}]}', 0))
@example(case=(b'{"choices": [{"index": true, "text": "b"}, {"index": 0, "text": "a"}]}', 2))
def test_the_json_parser_raises_only_bad_response(case: tuple[bytes, int]) -> None:
    raw, which = case
    with time_limit():
        try:
            response = parse_body(REQUESTS[which], raw, Reply(URL, 200))
        except BadResponse as exc:
            assert exc.url == URL and exc.status == 200 and str(exc).startswith(f"{URL} answered HTTP 200")
            event(f"BadResponse: {str(exc)[len(URL) + 22 :].split(';')[0][:40]}")
        else:
            check_response(response)
            event("parsed")


@FUZZ
@given(
    case=st.sampled_from(range(len(REQUESTS))).flatmap(
        lambda w: st.tuples(st.lists(payloads(w, stream=True) | json_values, max_size=6), st.just(w))
    ),
    done=st.booleans(),
    cuts=st.lists(st.integers(0, 4000), max_size=12),
)
@example(case=([{"choices": [{"delta": {"content": ["x"]}}]}], 0), done=True, cuts=[])
@example(case=([{"choices": "abc"}], 1), done=True, cuts=[])
@example(case=([{"usage": {"prompt_tokens": "many"}}], 0), done=True, cuts=[])
@example(case=([{"choices": [{"index": 9, "text": "x"}]}], 2), done=True, cuts=[])
def test_the_stream_accumulator_raises_only_bad_response(
    case: tuple[list[Any], int], done: bool, cuts: list[int]
) -> None:
    events, which = case
    body = b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events)
    body += b"data: [DONE]\n\n" if done else b""
    deltas: list[str] = []
    acc = StreamAccumulator(
        REQUESTS[which], Reply(URL, 200), started=0.0, clock=lambda: 0.0, on_delta=deltas.append
    )
    with time_limit():
        try:
            for chunk in chunked(body, cuts):
                if acc.feed(chunk):
                    break
            response = acc.finish()
        except BadResponse as exc:
            assert exc.url == URL and exc.status == 200
            event(type(exc).__name__)
        else:
            check_response(response)
            assert all(isinstance(d, str) for d in deltas)
            event("accumulated")


@FUZZ
@given(body=st.binary(max_size=600) | sse_bodies, cuts=st.lists(st.integers(0, 1200), max_size=12))
def test_random_bytes_through_the_accumulator_raise_only_bad_response(body: bytes, cuts: list[int]) -> None:
    acc = StreamAccumulator(REQUESTS[0], Reply(URL, 200), started=0.0, clock=lambda: 0.0)
    with time_limit():
        try:
            for chunk in chunked(body, cuts):
                if acc.feed(chunk):
                    break
            response = acc.finish()
        except BadResponse as exc:  # the only acceptable failure; any other type fails the test
            event(type(exc).__name__)
        else:
            check_response(response)
            event("accumulated")


@FUZZ
@given(
    case=st.sampled_from(range(len(REQUESTS))).flatmap(
        lambda w: st.tuples(valid_payload(w, stream=False), st.just(w))
    )
)
def test_every_valid_answer_parses_to_its_text(case: tuple[dict[str, Any], int]) -> None:
    answer, which = case
    with time_limit():
        response = parse_body(REQUESTS[which], json.dumps(answer).encode(), Reply(URL, 200))
    check_response(response)
    by_index = sorted(answer["choices"], key=lambda c: c["index"])
    texts = [c["message"]["content"] if "message" in c else c["text"] for c in by_index]
    assert response.text == texts[0] and response.finish_reason == by_index[0]["finish_reason"]
    assert response.texts == (texts if which == 2 else None)


@FUZZ
@given(
    case=st.sampled_from(range(len(REQUESTS))).flatmap(
        lambda w: st.tuples(st.lists(valid_payload(w, stream=True), max_size=5), st.just(w))
    ),
    cuts=st.lists(st.integers(0, 4000), max_size=12),
    crlf=st.booleans(),
)
def test_every_valid_stream_accumulates_to_its_text(
    case: tuple[list[dict[str, Any]], int], cuts: list[int], crlf: bool
) -> None:
    events, which = case
    body = b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events)
    body += b": bye\n\ndata: [DONE]\n\n"
    body = body.replace(b"\n", b"\r\n") if crlf else body
    deltas: list[str] = []
    acc = StreamAccumulator(
        REQUESTS[which], Reply(URL, 200), started=0.0, clock=lambda: 0.0, on_delta=deltas.append
    )
    with time_limit():
        done = False
        for chunk in chunked(body, cuts):
            done = acc.feed(chunk)
            if done:
                break
        response = acc.finish()
    assert done
    check_response(response)
    first = ["".join(_content(c) for c in e["choices"] if c["index"] == 0) for e in events]
    assert response.text == "".join(first) and "".join(deltas) == response.text
    if which == 2:
        assert response.texts == [
            "".join(_content(c) for e in events for c in e["choices"] if c["index"] == i) for i in range(3)
        ]


def _content(choice: dict[str, Any]) -> str:
    return str(choice["delta"]["content"] if "delta" in choice else choice["text"])

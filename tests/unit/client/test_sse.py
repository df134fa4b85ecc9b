from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pytest_iterate.client.errors import BadResponse, StreamError
from pytest_iterate.client.sse import SSEEvent, SSEParser, StreamDecoder


def parse_all(chunks: list[bytes]) -> list[SSEEvent]:
    p = SSEParser()
    out: list[SSEEvent] = []
    for c in chunks:
        out.extend(p.feed(c))
    out.extend(p.close())
    return out


def test_data_comments_multiline_event_names() -> None:
    body = (
        b": keep-alive\n\n"
        b"data: one\n\n"
        b"data: first\ndata: second\n\n"
        b'event: error\ndata: {"x": 1}\n\n'
        b"id: 7\nretry: 10\ndata:nospace\n\n"
    )
    assert parse_all([body]) == [
        SSEEvent("one"),
        SSEEvent("first\nsecond"),
        SSEEvent('{"x": 1}', "error"),
        SSEEvent("nospace"),
    ]


def test_crlf_and_lone_cr_line_endings() -> None:
    assert parse_all([b"data: a\r\n\r\ndata: b\r\rdata: c\n\n"]) == [
        SSEEvent("a"),
        SSEEvent("b"),
        SSEEvent("c"),
    ]
    # a \r\n split across chunks is one line ending, not two
    assert parse_all([b"data: a\r", b"\n\r", b"\ndata: b\n\n"]) == [SSEEvent("a"), SSEEvent("b")]


def test_last_event_without_blank_line_is_flushed_on_close() -> None:
    assert parse_all([b"data: x\n\ndata: [DONE]"]) == [SSEEvent("x"), SSEEvent("[DONE]")]


def test_utf8_split_mid_character() -> None:
    raw = 'data: {"t": "héllo ✓ 日本"}\n\n'.encode()
    cut = raw.index("✓".encode()) + 1
    assert parse_all([raw[:cut], raw[cut:]]) == [SSEEvent('{"t": "héllo ✓ 日本"}')]


def _stream_body(texts: list[str]) -> bytes:
    parts = [b": ping\n\n"]
    for t in texts:
        payload = {"choices": [{"index": 0, "delta": {"content": t}}]}
        parts.append(b"data: " + json.dumps(payload, ensure_ascii=False).encode() + b"\n\n")
    parts.append(b"data: [DONE]\n\n")
    return b"".join(parts)


@settings(max_examples=150, deadline=None)
@given(
    texts=st.lists(st.text(min_size=0, max_size=12), min_size=0, max_size=8),
    cuts=st.lists(st.integers(min_value=0, max_value=2000), max_size=25),
    crlf=st.booleans(),
)
def test_random_chunk_boundaries_give_the_same_events(texts: list[str], cuts: list[int], crlf: bool) -> None:
    body = _stream_body(texts)
    if crlf:
        body = body.replace(b"\n", b"\r\n")
    whole = parse_all([body])
    points = sorted({c % (len(body) + 1) for c in cuts})
    chunks = [body[a:b] for a, b in zip([0, *points], [*points, len(body)], strict=True)]
    assert parse_all(chunks) == whole
    # and the decoder yields the deltas in order and sees [DONE]
    dec = StreamDecoder()
    deltas: list[str] = []
    for c in chunks:
        deltas.extend(p["choices"][0]["delta"]["content"] for p in dec.feed(c))
    dec.close()
    assert dec.done and deltas == texts


def test_decoder_stream_cut_before_done_raises() -> None:
    dec = StreamDecoder(url="http://h/v1/chat/completions", status=200)
    assert dec.feed(b'data: {"choices": []}\n\n') == [{"choices": []}]
    with pytest.raises(StreamError, match=r"before \[DONE\]") as info:
        dec.close()
    assert info.value.status == 200


def test_decoder_error_payload_and_error_event() -> None:
    with pytest.raises(StreamError, match="overloaded"):
        StreamDecoder().feed(b'data: {"error": {"message": "overloaded", "code": 529}}\n\n')
    with pytest.raises(StreamError, match="boom"):
        StreamDecoder().feed(b"event: error\ndata: boom\n\n")


def test_decoder_malformed_json_is_stream_error() -> None:
    with pytest.raises(StreamError, match="not JSON") as info:
        StreamDecoder().feed(b"data: {not json\n\n")
    assert isinstance(info.value, BadResponse)
    with pytest.raises(StreamError, match="not a JSON object"):
        StreamDecoder().feed(b"data: [1, 2]\n\n")


def test_decoder_ignores_everything_after_done() -> None:
    dec = StreamDecoder()
    assert dec.feed(b"data: [DONE]\n\ndata: {bad\n\n") == []
    assert dec.close() == []

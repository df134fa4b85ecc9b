"""The cassette file format: lines, damaged lines, scrubbing, the header allow-list."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pytest_iterate.client.errors import CassetteError, IterateError
from pytest_iterate.doubles.cassettes.format import (
    Interaction,
    Timing,
    filter_headers,
    read_cassette,
    scrub,
    write_cassette,
)


def _interaction(key: str = "v1:abc", *, chunks: tuple[str, ...] | None = None) -> Interaction:
    return Interaction(
        key=key,
        method="POST",
        path="/v1/chat/completions",
        request_body={"model": "m", "messages": [{"role": "user", "content": "hé ✓"}]},
        status=200,
        headers={"content-type": "application/json"},
        timing=Timing(0.25, (0.01, 0.02) if chunks else (), 0.5),
        body=None if chunks else '{"choices": []}',
        chunks=chunks,
        recorded_at="2026-11-28T00:00:00Z",
    )


def test_round_trip_keeps_every_field(tmp_path: Path) -> None:
    items = [
        _interaction("v1:a"),
        _interaction("v1:b", chunks=("data: 1\n\n", "data: 2\n\n", "data: [DONE]\n\n")),
    ]
    path = tmp_path / "c.jsonl"
    write_cassette(path, items)
    back = read_cassette(path)
    assert back == items
    assert back[1].streamed and not back[0].streamed
    assert path.stat().st_mode & 0o777 == 0o644  # readable by others, like any fixture


def test_one_sorted_readable_line_per_interaction(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    write_cassette(path, [_interaction("v1:a"), _interaction("v1:b")])
    lines = path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 2
    doc = json.loads(lines[0])
    assert list(doc) == sorted(doc)
    assert list(doc["response"]) == sorted(doc["response"])
    assert "hé ✓" in lines[0]  # not \u-escaped: readable in a diff
    assert doc["response"]["timing"] == {"ttft_s": 0.25, "gaps_s": [], "total_s": 0.5}
    assert doc["version"] == 1


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        ('{"key": "v1:x", "request": {}, "response": {"status": 200, "body": "x"', "not JSON"),
        ('["a list"]', "not a JSON object"),
        ('{"key": "v1:x", "request": {}}', "missing field(s) response"),
        ('{"key": "v1:x", "request": {}, "response": {"status": 200}}', "exactly one of 'body' and 'chunks'"),
        ('{"key": "v1:x", "request": {}, "response": {"status": 99, "body": ""}}', "not an HTTP status"),
        (
            '{"key": "v1:x", "request": {}, "response": '
            '{"status": 200, "body": "", "timing": {"ttft_s": -1}}}',
            "negative",
        ),
        (
            '{"key": "v1:x", "version": 7, "request": {}, "response": {"status": 200, "body": ""}}',
            "version 7",
        ),
        (
            '{"key": "v1:x", "request": {}, "response": {"status": 200, "chunks": ["a", "b"], '
            '"timing": {"ttft_s": 0, "gaps_s": [1, 2, 3]}}}',
            "3 gaps for 2 chunks",
        ),
    ],
)
def test_damaged_line_names_file_and_line(tmp_path: Path, bad: str, reason: str) -> None:
    path = tmp_path / "damaged.jsonl"
    good = _interaction().to_line()
    path.write_text(f"# a comment\n{good}\n\n{bad}\n{good}\n", encoding="utf-8")
    with pytest.raises(CassetteError) as info:
        read_cassette(path)
    message = str(info.value)
    assert message.startswith(f"{path}:4: damaged cassette line")
    assert reason in message
    assert isinstance(info.value, IterateError)


def test_missing_file_is_a_cassette_error(tmp_path: Path) -> None:
    with pytest.raises(CassetteError, match="does not exist"):
        read_cassette(tmp_path / "nope.jsonl")


def test_scrub_replaces_secrets_everywhere_but_keeps_short_values() -> None:
    secret = "sk-test-SECRET-1234567890"
    doc = {"a": [f"Bearer {secret}", {"k": secret}], secret: 3, "n": 1.5, "short": "abc"}
    out = scrub(doc, [secret, "abc"])  # "abc" is shorter than MIN_SECRET_LENGTH: ignored
    assert secret not in json.dumps(out)
    assert out["a"][0] == "Bearer ***" and out["n"] == 1.5 and out["short"] == "abc"


def test_filter_headers_keeps_the_allow_list_only() -> None:
    secret = "sk-test-SECRET-1234567890"
    headers = {
        "Content-Type": "text/event-stream",
        "X-RateLimit-Remaining-Requests": "99",
        "x-ratelimit-reset-tokens": "1s",
        "Retry-After": "2",
        "retry-after-ms": "150",
        "Authorization": f"Bearer {secret}",
        "api-key": secret,
        "Set-Cookie": "session=abc",
        "Cookie": "a=b",
        "x-request-id": "123",
        "x-ratelimit-echo": secret,  # allowed name, but it holds the key: dropped
    }
    assert filter_headers(headers, [secret]) == {
        "content-type": "text/event-stream",
        "retry-after": "2",
        "retry-after-ms": "150",
        "x-ratelimit-remaining-requests": "99",
        "x-ratelimit-reset-tokens": "1s",
    }

"""Record then replay through the real client over a loopback aiohttp.web server."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiohttp import web

from pytest_iterate.client.client import LLMClient
from pytest_iterate.client.config import IterateConfig
from pytest_iterate.client.errors import CassetteError, ConfigError
from pytest_iterate.client.transport.aiohttp_transport import AiohttpTransport
from pytest_iterate.client.types import LLMRequest
from pytest_iterate.doubles.cassettes import CassetteTransport, cassette_transport, read_cassette

SECRET = "sk-test-CASSETTE-0123456789abcdef"
KEY_ENV = "ITERATE_CASSETTE_TEST_KEY"
WORDS = ["Hel", "lo ", "wör", "ld ✓", "!"]


@dataclass
class Upstream:
    """A small OpenAI-like server; it echoes the key back to prove scrubbing works."""

    ttft_s: float = 0.0
    gap_s: float = 0.0
    bodies: list[dict[str, object]] = field(default_factory=list)

    async def chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.bodies.append(body)
        auth = request.headers.get("Authorization", "")
        prompt = body["messages"][-1]["content"]
        headers = {
            "x-ratelimit-remaining-requests": "42",
            "x-echo-auth": auth,
            "Set-Cookie": f"token={SECRET}",
            "openai-organization": "org-1",
        }
        if not body.get("stream"):
            await asyncio.sleep(self.ttft_s)
            return web.json_response(
                {
                    "model": body["model"],
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": f"{prompt}: " + "".join(WORDS)},
                            "finish_reason": "stop",
                        }
                    ],
                    "usage": {"prompt_tokens": 7, "completion_tokens": 5},
                    "echo": auth,
                },
                headers=headers,
            )
        resp = web.StreamResponse(headers={**headers, "Content-Type": "text/event-stream"})
        await resp.prepare(request)
        await asyncio.sleep(self.ttft_s)
        for i, w in enumerate(WORDS):
            if i:
                await asyncio.sleep(self.gap_s)
            payload = {
                "model": body["model"],
                "choices": [{"index": 0, "delta": {"content": w}, "finish_reason": None}],
            }
            await resp.write(b"data: " + json.dumps(payload, ensure_ascii=False).encode() + b"\n\n")
        last = {
            "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 7, "completion_tokens": 5},
            "echo": auth,
        }
        await resp.write(b"data: " + json.dumps(last).encode() + b"\n\ndata: [DONE]\n\n")
        await resp.write_eof()
        return resp


@pytest.fixture
async def upstream() -> AsyncIterator[tuple[str, Upstream]]:
    state = Upstream()
    app = web.Application()
    app.router.add_post("/v1/chat/completions", state.chat)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}/v1", state
    finally:
        await runner.cleanup()


@pytest.fixture(autouse=True)
def api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, SECRET)


def _req(text: str = "hi", *, stream: bool = False) -> LLMRequest:
    return LLMRequest(
        messages=({"role": "user", "content": text},), max_tokens=16, stream=stream, params={"temperature": 0}
    )


class FakeSleep:
    def __init__(self) -> None:
        self.calls: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


async def _run(base: str, transport: CassetteTransport, *requests: LLMRequest):  # type: ignore[no-untyped-def]
    config = IterateConfig(base_url=base, model="m", api_key_env=KEY_ENV, max_attempts=1)
    async with LLMClient(config, transport=transport) as client:
        try:
            return [await client.call(r) for r in requests]
        finally:
            await transport.aclose()


async def test_record_then_replay_gives_identical_content_without_the_server(
    upstream: tuple[str, Upstream], tmp_path: Path
) -> None:
    base, server = upstream
    path = tmp_path / "c.jsonl"
    requests = (_req("a"), _req("a", stream=True), _req("b"))
    recorded = await _run(base, cassette_transport("all", path, inner=AiohttpTransport()), *requests)
    assert len(server.bodies) == 3
    assert len(read_cassette(path)) == 3

    # replay against a port where nothing listens: any network use would fail
    replayer = cassette_transport("none", path)
    replayed = await _run("http://127.0.0.1:9/v1", replayer, *requests)
    assert len(server.bodies) == 3 and replayer.hits == 3
    for a, b in zip(recorded, replayed, strict=True):
        assert (b.text, b.finish_reason, b.usage, b.chunks) == (a.text, a.finish_reason, a.usage, a.chunks)
    assert replayed[1].chunks == WORDS
    assert replayed[0].text == "a: " + "".join(WORDS)


async def test_no_authorization_header_or_key_value_anywhere_in_the_file(
    upstream: tuple[str, Upstream], tmp_path: Path
) -> None:
    base, server = upstream
    path = tmp_path / "c.jsonl"
    await _run(base, cassette_transport("all", path, inner=AiohttpTransport()), _req(), _req(stream=True))
    text = path.read_text(encoding="utf-8")
    assert server.bodies and SECRET not in text
    assert "authorization" not in text.lower()
    assert "cookie" not in text.lower() and "x-echo-auth" not in text
    whole, streamed = read_cassette(path)
    assert json.loads(whole.body or "")["echo"] == "***"  # the echoed key masked, the body kept
    assert '"echo": "***"' in "".join(streamed.chunks or ())
    headers = whole.headers
    assert headers == {
        "content-type": "application/json; charset=utf-8",
        "x-ratelimit-remaining-requests": "42",
    }


async def test_timing_replay_reproduces_recorded_latency(
    upstream: tuple[str, Upstream], tmp_path: Path
) -> None:
    base, server = upstream
    server.ttft_s, server.gap_s = 0.3, 0.06
    path = tmp_path / "c.jsonl"
    (rec,) = await _run(base, cassette_transport("all", path, inner=AiohttpTransport()), _req(stream=True))
    timing = read_cassette(path)[0].timing
    assert timing.ttft_s >= 0.3 and len(timing.gaps_s) >= 4 and timing.total_s >= 0.3 + 4 * 0.06

    (rep,) = await _run(base, cassette_transport("none", path, replay_timing=True), _req(stream=True))
    assert rec.ttft_s is not None and rep.ttft_s is not None
    # a replay never answers sooner than the recording (the sleeps are the recorded times) and
    # adds only scheduling on top; on an idle machine it lands within a few % of the recording,
    # the upper bound leaves room for a loaded one
    assert timing.ttft_s - 0.005 <= rep.ttft_s <= rec.ttft_s + 0.2
    assert timing.ttft_s + sum(timing.gaps_s) - 0.005 <= rep.total_s <= rec.total_s + 0.2
    assert len(server.bodies) == 1


async def test_timing_replay_sleeps_the_recorded_ttft_and_gaps(
    upstream: tuple[str, Upstream], tmp_path: Path
) -> None:
    base, server = upstream
    server.ttft_s, server.gap_s = 0.05, 0.01
    path = tmp_path / "c.jsonl"
    await _run(base, cassette_transport("all", path, inner=AiohttpTransport()), _req(stream=True), _req())
    streamed, whole = read_cassette(path)

    sleep = FakeSleep()
    await _run(
        base, CassetteTransport(None, path, "none", replay_timing=True, sleep=sleep), _req(stream=True)
    )
    t = streamed.timing
    assert sleep.calls[0] == t.ttft_s and sleep.calls[1 : 1 + len(t.gaps_s)] == [g for g in t.gaps_s if g > 0]
    # the client stops reading at [DONE]: the waits cover the chunks, at most the total
    assert sum(sleep.calls) >= t.ttft_s + sum(t.gaps_s) - 1e-9
    assert sum(sleep.calls) <= t.total_s + 1e-9

    sleep = FakeSleep()
    await _run(base, CassetteTransport(None, path, "none", replay_timing=True, sleep=sleep), _req())
    assert sleep.calls == [whole.timing.total_s]

    sleep = FakeSleep()  # timing replay off: no waiting at all
    await _run(base, CassetteTransport(None, path, "none", sleep=sleep), _req(), _req(stream=True))
    assert sleep.calls == []


async def test_mode_none_miss_names_key_and_cassette(tmp_path: Path) -> None:
    path = tmp_path / "empty.jsonl"
    path.write_text("", encoding="utf-8")
    transport = cassette_transport("none", path)
    with pytest.raises(CassetteError) as info:
        await _run("http://127.0.0.1:9/v1", transport, _req())
    key = transport.key_for("POST", "http://x/v1/chat/completions", _req().body("m"))
    assert key in str(info.value) and str(path) in str(info.value) and "'none'" in str(info.value)


async def test_mode_once_records_only_when_the_file_is_new(
    upstream: tuple[str, Upstream], tmp_path: Path
) -> None:
    base, server = upstream
    path = tmp_path / "once.jsonl"
    first = cassette_transport("once", path, inner=AiohttpTransport())
    assert first.can_record
    await _run(base, first, _req("a"))
    assert len(server.bodies) == 1 and path.exists()

    second = cassette_transport("once", path, inner=AiohttpTransport())
    assert not second.can_record
    await _run(base, second, _req("a"))  # replayed
    assert len(server.bodies) == 1
    with pytest.raises(CassetteError, match="no recorded interaction"):
        await _run(base, cassette_transport("once", path, inner=AiohttpTransport()), _req("new"))
    assert len(server.bodies) == 1


async def test_mode_new_replays_hits_and_appends_misses(
    upstream: tuple[str, Upstream], tmp_path: Path
) -> None:
    base, server = upstream
    path = tmp_path / "new.jsonl"
    await _run(base, cassette_transport("new", path, inner=AiohttpTransport()), _req("a"))
    transport = cassette_transport("new", path, inner=AiohttpTransport())
    await _run(base, transport, _req("a"), _req("b"), _req("a", stream=True))
    # "a" whole was replayed; "b" and the streamed shape of "a" were recorded
    assert [b["messages"][0]["content"] for b in server.bodies] == ["a", "b", "a"]  # type: ignore[index]
    assert (transport.hits, transport.recorded_count) == (1, 2)
    lines = read_cassette(path)
    assert [(i.request_body["messages"][0]["content"], i.streamed) for i in lines] == [
        ("a", False),
        ("b", False),
        ("a", True),
    ]
    assert lines[0].key == lines[2].key  # stream is not part of the key: matched on the shape too


async def test_mode_all_always_records_and_overwrites(upstream: tuple[str, Upstream], tmp_path: Path) -> None:
    base, server = upstream
    path = tmp_path / "all.jsonl"
    await _run(base, cassette_transport("all", path, inner=AiohttpTransport()), _req("a"), _req("b"))
    await _run(base, cassette_transport("all", path, inner=AiohttpTransport()), _req("a"))
    assert len(server.bodies) == 3
    assert [i.request_body["messages"][0]["content"] for i in read_cassette(path)] == ["a"]


async def test_repeated_key_replays_in_order_then_repeats_the_last(
    tmp_path: Path, upstream: tuple[str, Upstream]
) -> None:
    base, _ = upstream
    path = tmp_path / "rep.jsonl"
    await _run(base, cassette_transport("all", path, inner=AiohttpTransport()), _req("a"))
    lines = read_cassette(path)
    from dataclasses import replace

    from pytest_iterate.doubles.cassettes import write_cassette

    body = lines[0].body or ""
    write_cassette(path, [lines[0], replace(lines[0], body=body.replace("a: ", "second: "))])
    out = await _run(base, cassette_transport("none", path), _req("a"), _req("a"), _req("a"))
    assert [r.text.split(":")[0] for r in out] == ["a", "second", "second"]


async def test_cassette_is_host_independent_unless_asked(
    upstream: tuple[str, Upstream], tmp_path: Path
) -> None:
    base, _ = upstream
    path = tmp_path / "h.jsonl"
    await _run(base, cassette_transport("all", path, inner=AiohttpTransport()), _req())
    await _run("http://other.invalid:1234/v1", cassette_transport("none", path), _req())
    with pytest.raises(CassetteError):
        await _run("http://other.invalid:1234/v1", cassette_transport("none", path, match_host=True), _req())


def test_mode_none_needs_an_existing_cassette(tmp_path: Path) -> None:
    with pytest.raises(CassetteError, match=r"missing\.jsonl does not exist \(record mode 'none'"):
        cassette_transport("none", tmp_path / "missing.jsonl")


def test_damaged_cassette_fails_when_opened(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"key": "v1:x"}\n', encoding="utf-8")
    with pytest.raises(CassetteError, match=r"bad\.jsonl:1: damaged cassette line"):
        cassette_transport("none", path)


def test_bad_mode_is_a_config_error_listing_the_modes(tmp_path: Path) -> None:
    with pytest.raises(
        ConfigError,
        match=r"'sometimes' is not a valid cassette record mode\. Valid modes: none, once, new, all",
    ):
        cassette_transport("sometimes", tmp_path / "x.jsonl")
    assert "CassetteTransport" in repr(cassette_transport("new", tmp_path / "x.jsonl"))

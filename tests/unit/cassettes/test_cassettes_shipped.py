"""The shipped SmolLM2 cassette replays the standard workload with the network blocked."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from pytest_iterate._data import fixtures_dir
from pytest_iterate.client.client import LLMClient
from pytest_iterate.client.config import IterateConfig
from pytest_iterate.client.types import LLMRequest
from pytest_iterate.doubles.cassettes import cassette_transport, read_cassette
from pytest_iterate.pipeline.prompts import PromptBuilder
from pytest_iterate.pipeline.workload import load_workload, standard_workload_path

CASSETTE = fixtures_dir() / "cassettes" / "smollm2-standard.jsonl"
MAX_TOKENS = 64  # what scripts/record_cassette.py was run with


def _requests() -> list[LLMRequest]:
    builder = PromptBuilder()
    unique: dict[str, LLMRequest] = {}
    for design in load_workload(standard_workload_path()):
        request = builder.build(design).replace(max_tokens=MAX_TOKENS)
        unique.setdefault(json.dumps(request.body("smollm2"), sort_keys=True), request)
    return list(unique.values())


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Any connect, loopback included, raises (and is remembered)."""
    attempts: list[object] = []

    def refuse(self: socket.socket, address: object) -> None:
        attempts.append(address)
        raise OSError(f"network blocked in this test: connect to {address!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    return attempts


def test_the_block_really_blocks_loopback(no_network: list[object]) -> None:
    with (
        pytest.raises(OSError, match="network blocked"),
        socket.create_connection(("127.0.0.1", 9), timeout=1),
    ):
        pass
    assert no_network


def test_shipped_cassette_is_well_formed_and_holds_no_secret() -> None:
    items = read_cassette(CASSETTE)
    text = CASSETTE.read_text(encoding="utf-8")
    assert "authorization" not in text.lower() and "bearer" not in text.lower()
    assert all(i.status == 200 and i.request_body["model"] == "smollm2" for i in items)
    assert all(i.request_body["temperature"] == 0 for i in items)
    streamed = [i for i in items if i.streamed]
    assert streamed and all(
        i.timing.ttft_s > 0 and len(i.timing.gaps_s) == len(i.chunks or ()) - 1 for i in streamed
    )


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
async def test_standard_workload_replays_offline(
    no_network: list[object], tmp_path: Path, stream: bool
) -> None:
    requests = _requests()
    assert len(requests) == 70
    config = IterateConfig(base_url="http://127.0.0.1:8765/v1", model="smollm2", max_attempts=1)
    transport = cassette_transport("none", CASSETTE)
    async with LLMClient(config, transport=transport) as client:
        responses = [await client.call(r.replace(stream=stream)) for r in requests]
    await transport.aclose()
    assert no_network == []  # replay never tried to connect
    assert transport.hits == 70 and transport.misses == 0
    assert all(r.text.strip() and r.finish_reason in ("stop", "length") for r in responses)
    if stream:
        assert all(len(r.chunks) > 1 and r.ttft_s is not None and r.ttft_s <= r.total_s for r in responses)
    else:
        assert all(r.usage is not None and r.usage.completion_tokens <= MAX_TOKENS for r in responses)

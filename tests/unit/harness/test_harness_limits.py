"""Client limits that follow the load, the in-flight gauge, extra headers, the cache folder."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from pytest_iterate.harness.limits import FILES_RESERVED, LimitError, client_limits, raise_open_files_limit
from pytest_iterate.harness.loads import ClosedLoop, ConstantRate, Poisson
from pytest_iterate.harness.paths import user_cache_dir
from pytest_iterate.harness.transport import BenchTransport, InflightGauge, parse_header


def test_closed_loop_limits_are_its_concurrency() -> None:
    limits = client_limits(
        [ClosedLoop(1), ClosedLoop(64)], request_timeout_s=10, max_attempts=3, open_files=4096
    )
    assert (limits.max_concurrent_requests, limits.max_connections, limits.capped_by) == (64, 64, "")


def test_open_loop_limits_cover_the_rate_times_the_longest_request() -> None:
    # 100 req/s, attempts of at most 2 s, 3 attempts with up to 1 s between: 100 x 8 s
    limits = client_limits(
        [ConstantRate(100)], request_timeout_s=2, max_attempts=3, backoff_max_s=1, open_files=100_000
    )
    assert limits.max_concurrent_requests == 800 == limits.max_connections
    bursty = client_limits([Poisson(100)], request_timeout_s=2, max_attempts=1, open_files=100_000)
    assert bursty.max_connections == 400  # twice the mean rate for poisson bursts


def test_the_open_files_limit_stops_a_closed_loop_and_caps_an_open_one() -> None:
    with pytest.raises(LimitError) as info:
        client_limits([ClosedLoop(5000)], request_timeout_s=10, max_attempts=3, open_files=1024)
    text = str(info.value)
    assert "--concurrency 5000" in text and "ulimit -n" in text and "1024" in text
    capped = client_limits([ConstantRate(1000)], request_timeout_s=10, max_attempts=1, open_files=1024)
    assert capped.max_connections == 1024 - FILES_RESERVED and capped.max_concurrent_requests == 10_000
    assert "open-files limit" in capped.capped_by


def test_raise_open_files_limit_reports_the_limit_in_force() -> None:
    resource = pytest.importorskip("resource")
    limit = raise_open_files_limit()
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert limit is None or limit == soft


class _Response:
    def __init__(self, chunks: list[bytes]) -> None:
        self.status, self.headers, self._chunks, self.closed = 200, {}, chunks, 0

    async def read(self) -> bytes:
        return b"".join(self._chunks)

    async def iter_chunks(self) -> AsyncIterator[bytes]:
        for chunk in self._chunks:
            yield chunk

    async def aclose(self) -> None:
        self.closed += 1


class _Inner:
    enforces_total_timeout = True

    def __init__(self, fail: bool = False) -> None:
        self.seen: list[Mapping[str, str]] = []
        self.kwargs: list[dict[str, Any]] = []
        self.fail = fail

    async def send(self, method: str, url: str, *, headers: Mapping[str, str], **kw: Any) -> _Response:
        self.seen.append(headers)
        self.kwargs.append(kw)
        if self.fail:
            raise ConnectionError("refused")
        return _Response([b"a", b"b"])

    async def aclose(self) -> None:
        pass


async def test_bench_transport_adds_headers_and_counts_requests_on_the_wire() -> None:
    inner = _Inner()
    gauge = InflightGauge()
    t = BenchTransport(inner, headers={"X-Team": "search"}, gauge=gauge)
    base = {"Content-Type": "application/json"}
    one = await t.send("POST", "u", headers=base, json_body={}, timeout_s=1.0, auth="kept")
    two = await t.send("POST", "u", headers=base, json_body={}, timeout_s=1.0)
    assert (gauge.current, gauge.peak) == (2, 2)
    assert inner.seen[0] == {"Content-Type": "application/json", "X-Team": "search"}
    assert inner.seen[0] is inner.seen[1]  # merged once per mapping the client sends
    assert inner.kwargs[0] == {"json_body": {}, "timeout_s": 1.0, "auth": "kept"}  # passed on as given
    assert await one.read() == b"ab" and gauge.current == 1
    assert [c async for c in two.iter_chunks()] == [b"a", b"b"] and gauge.current == 0
    await two.aclose()  # leaving twice counts once
    assert gauge.current == 0 and gauge.reset() == 2 and gauge.peak == 0
    assert t.enforces_total_timeout and "search" not in repr(t) and "X-Team" in repr(t)
    failing = BenchTransport(_Inner(fail=True), gauge=gauge)
    with pytest.raises(ConnectionError):
        await failing.send("POST", "u", headers=base, json_body={}, timeout_s=1.0)
    assert gauge.current == 0 and gauge.peak == 1


@pytest.mark.parametrize(
    ("text", "expected"),
    [("X-Team: search", ("X-Team", "search")), ("X-Empty:", ("X-Empty", "")), ("a:b:c", ("a", "b:c"))],
)
def test_parse_header(text: str, expected: tuple[str, str]) -> None:
    assert parse_header(text) == expected


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("Bearer sk-secret", "NAME:VALUE"),
        ("Bad Name: x", "holds characters a header name cannot"),
        (":x", "NAME:VALUE"),
        ("X-A: a\r\nX-B: b", "holds a line break"),
    ],
)
def test_bad_headers_are_refused_without_echoing_the_value(text: str, needle: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_header(text)
    assert needle in str(info.value) and "sk-secret" not in str(info.value)


def test_user_cache_dir_per_platform(tmp_path: Path) -> None:
    home = str(tmp_path)
    assert user_cache_dir({"HOME": home}, "linux") == tmp_path / ".cache" / "pytest-iterate"
    assert user_cache_dir({"HOME": home, "XDG_CACHE_HOME": "/x/c"}, "linux") == Path("/x/c/pytest-iterate")
    assert (
        user_cache_dir({"HOME": home, "XDG_CACHE_HOME": "rel"}, "linux")
        == tmp_path / ".cache" / "pytest-iterate"
    )
    assert user_cache_dir({"HOME": home}, "darwin") == tmp_path / "Library" / "Caches" / "pytest-iterate"
    assert user_cache_dir({"HOME": home, "LOCALAPPDATA": "/w"}, "win32") == Path("/w/pytest-iterate/Cache")

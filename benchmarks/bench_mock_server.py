"""The mock server's own ceiling: requests/s with the ``zero`` profile on loopback.

In one run, R rounds each drive (a) a minimal raw asyncio HTTP responder (an
``asyncio.Protocol`` answering a fixed JSON completion) and (b) the mock server
(``MockServer(MockLLM("zero"))``, non-streamed chat completions cycling over 64 prompts)
with raw aiohttp at each concurrency; both servers run in a background thread with
their own loop. Printed: median req/s of each and the ratio (b)/(a) per concurrency.

    python benchmarks/bench_mock_server.py --requests 3000 --concurrency 10 50 --rounds 3
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import threading
import time

import aiohttp

from pytest_iterate.doubles.mock.core import MockLLM
from pytest_iterate.doubles.mock.server import MockServer

FIXED = json.dumps(
    {
        "id": "x",
        "object": "chat.completion",
        "created": 0,
        "model": "m",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
    }
).encode()
RESPONSE = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
    + str(len(FIXED)).encode()
    + b"\r\n\r\n"
    + FIXED
)


class RawResponder(asyncio.Protocol):
    """Keep-alive HTTP/1.1: for every request (headers + Content-Length body) write RESPONSE."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.buf = b""

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buf[:end].lower()
            length = 0
            i = head.find(b"content-length:")
            if i >= 0:
                length = int(head[i + 15 :].split(b"\r\n", 1)[0])
            if len(self.buf) < end + 4 + length:
                return
            self.buf = self.buf[end + 4 + length :]
            self.transport.write(RESPONSE)  # type: ignore[attr-defined]


def start_raw() -> tuple[str, asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    ready: list[str] = []
    event = threading.Event()

    def run() -> None:
        asyncio.set_event_loop(loop)
        srv = loop.run_until_complete(loop.create_server(RawResponder, "127.0.0.1", 0, backlog=1024))
        ready.append(f"http://127.0.0.1:{srv.sockets[0].getsockname()[1]}/v1")
        event.set()
        loop.run_forever()

    threading.Thread(target=run, daemon=True).start()
    event.wait()
    return ready[0], loop


BODIES = [
    json.dumps(
        {
            "model": "gpt-4o-mini",
            "messages": [{"role": "user", "content": f"Task: design {i}"}],
            "max_tokens": 64,
        }
    ).encode()
    for i in range(64)
]


async def drive(url: str, n: int, concurrency: int) -> float:
    conn = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=conn) as http:
        counter = iter(range(n))

        async def worker() -> None:
            for i in counter:
                async with http.post(
                    url + "/chat/completions",
                    data=BODIES[i % 64],
                    headers={"Content-Type": "application/json"},
                ) as r:
                    await r.read()
                    assert r.status == 200, r.status

        await asyncio.gather(*(worker() for _ in range(concurrency)))  # warm the pool
        counter = iter(range(n))
        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return n / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=3000)
    ap.add_argument("--concurrency", type=int, nargs="+", default=[10, 50])
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    raw_url, raw_loop = start_raw()
    mock = MockServer(MockLLM("zero")).start_in_thread()
    try:
        for c in args.concurrency:
            raw_rps, mock_rps = [], []
            for _ in range(args.rounds):
                raw_rps.append(asyncio.run(drive(raw_url, args.requests, c)))
                mock_rps.append(asyncio.run(drive(mock.base_url, args.requests, c)))
            r, m = statistics.median(raw_rps), statistics.median(mock_rps)
            print(
                f"concurrency {c:>3}: raw asyncio responder {r:8.0f} req/s | mock server (zero profile) "
                f"{m:8.0f} req/s | ratio mock/raw {m / r:.2f}  (medians of {args.rounds})",
                flush=True,
            )
    finally:
        mock.stop()
        raw_loop.call_soon_threadsafe(raw_loop.stop)


if __name__ == "__main__":
    main()

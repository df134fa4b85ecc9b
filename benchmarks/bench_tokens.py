"""Token-guard benchmark: counting a ~2k-token chat prompt, and the guard's plan with exact counts.

    .venv/bin/python benchmarks/bench_tokens.py [--repeats 7] [--requests 300]
        [--concurrency 10] [--plans 400] [--url BASE_URL --model NAME]

Each request is a fixed system prompt (about 1,500 tokens, the deterministic part
a prompt builder reuses) plus a user message (about 500 tokens) that differs per
request. Three ways to count it with the cookbook formula:

1. recount:    every piece is counted from scratch (``TokenCounter(cache_size=0)``)
2. memo:       the system prompt's count comes from ``count_cached`` (the default
               TokenCounter, which routes system messages through its LRU memo)
3. precounted: the caller passes the system prompt's ``PromptPiece.tokens`` in
               ``count_messages(..., precounted={0: n})``

Also: a full ``TokenGuard.check`` of the same request (what the guard does per
request), with the memo. Medians over ``--repeats`` runs of ``--requests`` requests;
the ratio is recount / memo (higher is better).

Then the cost of exact counting: ``GuardingCaller.plan`` (the ``token_guard`` stage:
exact counts and checks) at ``--concurrency`` on loopback, against a server with a
tokenize route in another process (``pytest_iterate.doubles.foreign``, shaped like
llama.cpp) or the real server at ``--url``. Per-plan latency (mean, p50, p95), the
latency added over (1), and the tokenize calls per request, of:

1. estimate only, far from the window (``token_counting = "estimate"``)
2. exact, far from the window: the bound clearly fits, no count could change the answer,
   none is asked for
3. exact, near: user text new: the window is the server's own count of these prompts plus
   48 tokens, so the estimate alone would cut them; the system prompt's count is cached,
   each user text is counted (one call per request: the pipeline's case)
4. exact, near: all texts new: system and user text new every time (two calls, together)
5. exact, near: repeat: the same requests again (every count from the digest cache)

Target: < 5 ms added per request at concurrency 10.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections.abc import Callable

from pytest_iterate.client.client import LLMClient
from pytest_iterate.client.config import IterateConfig
from pytest_iterate.client.types import LLMRequest
from pytest_iterate.tokens import GuardingCaller, TokenCounter, TokenGuard

SYSTEM = (
    "You are a senior software engineer. Follow the house style: small modules, typed public API, "
    "docstrings that explain why, tests for every branch, no global state, errors mapped at the "
    "boundary, and no secrets in logs. "
) * 33
USER = (
    "Design {i}: implement a rate-limited job queue with retries, metrics and a CLI. Details: "
    + ("the queue takes jobs with priorities and deadlines; workers pull in order; ") * 30
)


def build_requests(n: int) -> list[LLMRequest]:
    return [
        LLMRequest(
            messages=({"role": "system", "content": SYSTEM}, {"role": "user", "content": USER.format(i=i)}),
            max_tokens=512,
        )
        for i in range(n)
    ]


def per_request_us(fn: Callable[[LLMRequest], int], requests: list[LLMRequest], repeats: int) -> float:
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        for request in requests:
            fn(request)
        runs.append((time.perf_counter() - start) / len(requests) * 1e6)
    return statistics.median(runs)


_SERVER = """
import asyncio, sys
from pytest_iterate.doubles.foreign import ForeignServer
async def main():
    async with ForeignServer(kind="llama.cpp", window=32768) as srv:
        print(srv.base_url, flush=True)
        await asyncio.Event().wait()
asyncio.run(main())
"""


def pieces(i: int, tag: str) -> str:
    return f"{tag} {i}: " + USER.format(i=i)


async def plan_latencies(
    caller: GuardingCaller, requests: list[LLMRequest], concurrency: int
) -> tuple[list[float], float]:
    """Seconds of ``caller.plan`` per request with ``concurrency`` plans in flight, and the wall
    time of all of them (wall / requests: what each plan costs the event loop)."""
    out: list[float] = []
    queue = iter(requests)

    async def worker() -> None:
        for request in queue:
            start = time.perf_counter()
            await caller.plan(request)
            out.append(time.perf_counter() - start)

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return out, time.perf_counter() - start


def stats_ms(values: list[float]) -> tuple[float, float, float]:
    ordered = sorted(values)
    return (
        statistics.fmean(ordered) * 1000,
        ordered[len(ordered) // 2] * 1000,
        ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))] * 1000,
    )


async def exact_counting(url: str | None, model: str, concurrency: int, plans: int) -> None:
    proc = None
    if url is None:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", _SERVER, stdout=asyncio.subprocess.PIPE
        )
        assert proc.stdout is not None
        url = (await proc.stdout.readline()).decode().strip()
        where = f"the foreign double (llama.cpp-shaped) in another process at {url}"
    else:
        where = url
    system = {"role": "system", "content": SYSTEM}

    def chat(system_text: dict[str, str], i: int, tag: str) -> LLMRequest:
        return LLMRequest(messages=(system_text, {"role": "user", "content": pieces(i, tag)}), max_tokens=4)

    rows: dict[str, tuple[list[float], float, float]] = {}
    try:
        far = IterateConfig(base_url=url, model=model, context_window=32768, request_timeout_s=120.0)
        async with LLMClient(far) as client:
            # the window that makes these prompts "near": the server's own count plus a little,
            # taken from a sample the cache never sees again
            sizer = GuardingCaller.for_client(client, TokenGuard(far))
            start = time.perf_counter()
            server = await sizer.server()  # the one probe
            probe_ms = (time.perf_counter() - start) * 1000
            info = sizer.tokens.info if sizer.tokens is not None else None
            if server is None:
                raise SystemExit(f"{where} offers no tokenize route: nothing to measure")
            sample = chat(system, -2, "sample")
            answer = await sizer(sample)
            tight = (answer.usage.prompt_tokens if answer.usage else 0) + 4 + 48
            near = far.replace(context_window=tight)
            new_user = [chat(system, i, "user") for i in range(plans)]
            all_new = [
                chat({"role": "system", "content": f"Variant {i}. " + SYSTEM}, i, "both")
                for i in range(plans)
            ]
            estimate = GuardingCaller.for_client(client, TokenGuard(far), counting="estimate")
            await estimate(chat(system, -1, "warm"))
            exact_far = GuardingCaller.for_client(client, TokenGuard(far))
            await exact_far(chat(system, -1, "warm"))  # probe, and the template's overhead
            exact = GuardingCaller.for_client(client, TokenGuard(near))
            await exact(chat(system, -1, "warm"))
            for name, caller, requests in (
                ("estimate only, far from the window", estimate, new_user),
                ("exact, far from the window", exact_far, new_user),
                ("exact, near: user text new", exact, new_user),
                ("exact, near: all texts new", exact, all_new),
                ("exact, near: repeat (cached)", exact, new_user),
            ):
                tokens = caller.tokens.server if caller.tokens is not None else None
                before = tokens.calls if tokens is not None else 0
                values, wall = await plan_latencies(caller, requests, concurrency)
                calls = (tokens.calls - before) if tokens is not None else 0
                rows[name] = (values, wall / len(requests), calls / len(requests))
    finally:
        if proc is not None:
            proc.terminate()
            await proc.wait()
    print(f"\nGuardingCaller.plan (token_guard stage), concurrency {concurrency}, {plans} requests per row")
    print(f"  against {where}")
    print(f"  probe: {info.describe() if info else 'none'}, {probe_ms:.1f} ms once; near = window {tight}")
    base = statistics.fmean(rows["estimate only, far from the window"][0]) * 1000
    base_wall = rows["estimate only, far from the window"][1] * 1000
    print("  latency of one plan (mean, p50, p95, added to (1)); wall / requests (added); counts/request")
    for name, (values, wall, calls) in rows.items():
        mean, p50, p95 = stats_ms(values)
        print(
            f"  {name:34s} {mean:6.2f} {p50:6.2f} {p95:6.2f} ms ({mean - base:+6.2f}); "
            f"{wall * 1000:5.2f} ms ({wall * 1000 - base_wall:+5.2f}); {calls:.2f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--plans", type=int, default=400)
    parser.add_argument(
        "--url", default=None, help="a real endpoint with a tokenize route (default: the double)"
    )
    parser.add_argument("--model", default="foreign")
    args = parser.parse_args()

    requests = build_requests(args.requests)
    fresh = TokenCounter(cache_size=0)
    memo = TokenCounter()
    piece = memo.piece(SYSTEM)
    guard = TokenGuard(IterateConfig(context_window=8192), counter=memo)
    fresh.count_text("warm up the encoding")
    total = memo.count_messages(requests[0].messages)
    system_share = piece.tokens / total

    recount = per_request_us(lambda r: fresh.count_messages(r.messages), requests, args.repeats)
    memoised = per_request_us(lambda r: memo.count_messages(r.messages), requests, args.repeats)
    precounted = per_request_us(
        lambda r: memo.count_messages(r.messages, precounted={0: piece.tokens}), requests, args.repeats
    )
    check = per_request_us(lambda r: guard.check(r).prompt_tokens, requests, args.repeats)

    print(
        f"prompt: {total} tokens per request ({piece.tokens} system = {system_share:.0%}), "
        f"{args.requests} requests x {args.repeats} repeats, medians"
    )
    print(f"  recount everything        {recount:9.1f} us/request")
    print(f"  system count from memo    {memoised:9.1f} us/request")
    print(f"  system count precounted   {precounted:9.1f} us/request")
    print(f"  TokenGuard.check (memo)   {check:9.1f} us/request")
    print(f"  ratio recount/memo        {recount / memoised:9.2f}x")
    print(f"  ratio recount/precounted  {recount / precounted:9.2f}x")
    asyncio.run(exact_counting(args.url, args.model, args.concurrency, args.plans))


if __name__ == "__main__":
    main()

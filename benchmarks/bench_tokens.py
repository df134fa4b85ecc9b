"""Token-counting benchmark: cost per request of counting a ~2k-token chat prompt.

    .venv/bin/python benchmarks/bench_tokens.py [--repeats 7] [--requests 300]

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
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

from pytest_iterate.client.config import IterateConfig
from pytest_iterate.client.types import LLMRequest
from pytest_iterate.tokens import TokenCounter, TokenGuard

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--requests", type=int, default=300)
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


if __name__ == "__main__":
    main()

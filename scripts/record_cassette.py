#!/usr/bin/env python
"""Record the standard workload from a real endpoint into a cassette.

Every unique request of ``fixtures/workloads/designs.jsonl`` (as
:class:`~pytest_iterate.pipeline.prompts.PromptBuilder` builds it: temperature 0, the
design's own ``max_tokens`` unless ``--max-tokens`` says otherwise) goes through the real
client stack (:class:`~pytest_iterate.pipeline.client.LLMClient` over aiohttp) with a
:class:`~pytest_iterate.cassettes.CassetteTransport` under it, once whole and once
streamed (``--shapes``). Duplicates are sent once: the cassette is keyed on the body.

    scripts/real_endpoint.sh start
    .venv/bin/python scripts/record_cassette.py \\
        --endpoint http://127.0.0.1:8765/v1 --model smollm2 \\
        --out fixtures/cassettes/smollm2-standard.jsonl --mode all

``--mode new`` resumes an interrupted recording (recorded requests are replayed).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

from pytest_iterate.cassettes import RECORD_MODES, cassette_transport
from pytest_iterate.pipeline.client import LLMClient
from pytest_iterate.pipeline.config import IterateConfig
from pytest_iterate.pipeline.prompts import PromptBuilder
from pytest_iterate.pipeline.types import LLMRequest
from pytest_iterate.pipeline.workload import load_workload, standard_workload_path


def _parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--endpoint", default="http://127.0.0.1:8765/v1", help="OpenAI-compatible base URL")
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--workload", type=Path, default=None, help="default: the standard workload")
    ap.add_argument("--out", type=Path, default=Path("fixtures/cassettes/smollm2-standard.jsonl"))
    ap.add_argument("--mode", choices=RECORD_MODES, default="new")
    ap.add_argument("--max-tokens", type=int, default=None, help="override every design's max_tokens")
    ap.add_argument("--shapes", default="whole,stream", help="comma list of whole, stream")
    ap.add_argument("--limit", type=int, default=None, help="only the first N unique requests")
    ap.add_argument("--timeout", type=float, default=180.0, help="per-request timeout, seconds")
    return ap.parse_args(argv)


async def record(args: argparse.Namespace) -> int:
    designs = load_workload(args.workload or standard_workload_path())
    builder = PromptBuilder(model=None)
    unique: dict[str, LLMRequest] = {}
    for design in designs:
        request = builder.build(design)
        if args.max_tokens is not None:
            request = request.replace(max_tokens=args.max_tokens)
        unique.setdefault(json.dumps(request.body(args.model), sort_keys=True), request)
    requests = list(unique.values())[: args.limit]
    shapes = [s.strip() for s in args.shapes.split(",") if s.strip()]
    config = IterateConfig(
        base_url=args.endpoint,
        model=args.model,
        request_timeout_s=args.timeout,
        max_concurrent_requests=1,  # a llama.cpp server answers one at a time
        cache_enabled=False,
    )
    transport = cassette_transport(args.mode, args.out)
    started = time.monotonic()
    async with LLMClient(config, transport=transport) as client:
        try:
            for n, request in enumerate(requests, start=1):
                for shape in shapes:
                    r = await client.call(request.replace(stream=shape == "stream"))
                    tokens = r.usage.completion_tokens if r.usage else len(r.chunks)
                    print(
                        f"[{n}/{len(requests)}] {shape:6s} ttft={r.ttft_s or 0:.2f}s total={r.total_s:.2f}s "
                        f"tokens={tokens} finish={r.finish_reason}",
                        flush=True,
                    )
        finally:
            await transport.aclose()
    print(
        f"{transport.recorded_count} new interactions, {transport.hits} replayed, "
        f"{len(transport.interactions)} in {args.out}, {time.monotonic() - started:.0f}s"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    return asyncio.run(record(_parse(argv)))


if __name__ == "__main__":
    sys.exit(main())

"""How an endpoint's tokenizer counts compared with cl100k, per script, through its tokenize route.

    .venv/bin/python scripts/token_ratios.py http://127.0.0.1:8765/v1 [--model smollm2]
        [--workload fixtures/workloads/long_context_scripts.jsonl]

Probes the endpoint the way the token guard does (pytest_iterate.tokens.server), then counts
each requirement of the workload exactly and prints, per script (the ``extra.script`` of each
request), the server's tokens per cl100k token: the number one learned ratio gets wrong.
Exits 1 when the endpoint offers no tokenize route.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections import defaultdict
from pathlib import Path

from pytest_iterate.client.client import LLMClient
from pytest_iterate.client.config import IterateConfig
from pytest_iterate.pipeline.workload import load_workload
from pytest_iterate.tokens import TokenCounter, TransportHTTP, probe_server
from pytest_iterate.tokens.server import ServerTokens, server_root

ROOT = Path(__file__).resolve().parent.parent


async def main(url: str, model: str, workload: Path) -> int:
    client = LLMClient(IterateConfig(base_url=url, model=model))  # its transport and credentials
    try:
        http = TransportHTTP.for_client(client)
        assert http is not None  # an LLMClient always has a transport
        info = await probe_server(http, url, model)
        print(f"{url}: {info.describe()}")
        if info.route is None:
            return 1
        server = ServerTokens(http, server_root(url), info, model=model, timeout_s=60.0)
        counter = TokenCounter()
        ours: dict[str, int] = defaultdict(int)
        theirs: dict[str, int] = defaultdict(int)
        for design in load_workload(workload):
            script = str(design.extra.get("script", "all"))
            for text in design.requirements:
                ours[script] += counter.count_text(text)
                theirs[script] += await server.count(text)
    finally:
        await client.aclose()
    print(f"{'script':10s} {'cl100k':>8s} {'server':>8s} {'ratio':>6s}")
    for script in ours:
        print(f"{script:10s} {ours[script]:8d} {theirs[script]:8d} {theirs[script] / ours[script]:6.2f}")
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("url", help="the endpoint's base URL, e.g. http://127.0.0.1:8765/v1")
    parser.add_argument("--model", default="smollm2")
    parser.add_argument(
        "--workload", type=Path, default=ROOT / "fixtures" / "workloads" / "long_context_scripts.jsonl"
    )
    args = parser.parse_args()
    sys.exit(asyncio.run(main(args.url.rstrip("/"), args.model, args.workload)))

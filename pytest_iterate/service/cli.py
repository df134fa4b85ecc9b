"""``iterate-bench serve-pipeline``: the pipeline as an OpenAI-compatible service until Ctrl-C.

    iterate-bench serve-pipeline --upstream https://api.openai.com/v1 --port 8080
    iterate-bench serve-pipeline --upstream http://127.0.0.1:8000/v1 --max-concurrent 4 --max-queue 16
    python -m pytest_iterate.service.cli --upstream http://127.0.0.1:8000/v1 --batch-size 8

Point any OpenAI client at the printed base URL (the first line, flushed, e.g.
``http://127.0.0.1:8080/v1``): repeats are answered from the cache, sends are paced
to the upstream's rate limits, and a saturated service answers 503 with
``Retry-After`` at once. ``/metrics`` and ``/health`` live on the same port. Settings
not given here come from ``[tool.iterate]`` and ``ITERATE_*`` (the API key from the
variable ``api_key_env`` names).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from pytest_iterate._serving import until_stopped
from pytest_iterate.client.config import IterateConfig, coerce
from pytest_iterate.client.errors import ConfigError
from pytest_iterate.service.app import PipelineService

__all__ = ["add_parser", "build_parser", "main", "run"]

# option -> IterateConfig field
_FIELDS = {
    "upstream": "base_url",
    "model": "model",
    "max_concurrent": "max_concurrent_requests",
    "max_queue": "max_queue",
    "cache_dir": "cache_dir",
    "batch_size": "batch_size",
}


def _configure(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument(
        "--upstream",
        required=True,
        metavar="URL",
        help="the endpoint to serve, e.g. http://127.0.0.1:8000/v1",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8080, help="port (0: any free port; default 8080)")
    p.add_argument("--model", default=None, help="model sent upstream when a request names none")
    p.add_argument("--max-concurrent", default=None, metavar="N", help="requests in flight upstream at once")
    p.add_argument("--max-queue", default=None, metavar="N", help="requests waiting before a 503 Busy answer")
    p.add_argument("--cache-dir", default=None, metavar="DIR", help="folder of the response cache")
    p.add_argument("--no-cache", action="store_true", help="no response cache")
    p.add_argument(
        "--batch-size", default=None, metavar="N", help="> 1: requests within a short window share calls"
    )
    return p


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``serve-pipeline`` sub-command to an argparse ``subparsers`` object."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "serve-pipeline",
        help="serve the cached, rate-aware pipeline as an OpenAI-compatible endpoint",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    _configure(p)
    p.set_defaults(func=run)
    return p


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m pytest_iterate.service.cli",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    return _configure(parser)


def config_from(args: argparse.Namespace) -> IterateConfig:
    """The service's IterateConfig: these options > ITERATE_* > [tool.iterate] > defaults."""
    overrides = {
        field: coerce(field, value, f"--{option.replace('_', '-')}")
        for option, field in _FIELDS.items()
        if (value := getattr(args, option)) is not None
    }
    if args.no_cache:
        overrides["cache_enabled"] = False
    return IterateConfig.load(overrides)


async def _serve(args: argparse.Namespace, config: IterateConfig) -> int:
    async with PipelineService(config, host=args.host, port=args.port) as service:
        print(service.base_url, flush=True)
        await until_stopped()
    return 0


def run(args: argparse.Namespace) -> int:
    """Serve until stopped; a bad option prints one line and returns 2."""
    try:
        config = config_from(args)
        return asyncio.run(_serve(args, config))
    except ConfigError as exc:
        print(f"serve-pipeline: {exc}", file=sys.stderr, flush=True)
        return 2
    except OSError as exc:
        print(f"serve-pipeline: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        return 0


def main(argv: list[str] | None = None) -> int:
    return run(build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())

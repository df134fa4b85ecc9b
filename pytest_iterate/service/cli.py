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
import sys

from pytest_iterate._serving import command_parsers, serve_command
from pytest_iterate.client.config import IterateConfig, coerce
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


def run(args: argparse.Namespace) -> int:
    """Serve until stopped; a bad option prints one line and returns 2."""
    return serve_command(
        "serve-pipeline",
        lambda: PipelineService(config_from(args), host=args.host, port=args.port),
        f"{args.host}:{args.port}",
    )


add_parser, build_parser = command_parsers(
    "serve-pipeline",
    "pytest_iterate.service.cli",
    "serve the cached, rate-aware pipeline as an OpenAI-compatible endpoint",
    __doc__,
    _configure,
    run,
)


def main(argv: list[str] | None = None) -> int:
    return run(build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())

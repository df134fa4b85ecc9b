"""The fixtures the plugin gives every test (with or without ``--iterate``).

=====================  ======================================================================
``iterate_options``    the resolved :class:`~pytest_iterate.plugin.options.IterateOptions`
``mock_llm``           an in-process :class:`~pytest_iterate.doubles.mock.MockLLM` served on
                       ``MOCK_BASE_URL`` through a respx router (httpx only); knobs via
                       indirect parametrization: ``{"profile": "fast", "faults": {"429": 0.1}}``;
                       call log in ``mock_llm.calls``
``mock_llm_server``    the loopback mock server (own thread and loop, port 0): its base URL
                       (a ``str`` with ``.core``, the MockLLM behind it); same knobs
``iterate_config``     an :class:`~pytest_iterate.client.config.IterateConfig` for the
                       endpoint (the loopback mock by default), cache in ``tmp_path``
``iterate_metrics``    a fresh :class:`~pytest_iterate.client.metrics.IterateMetrics`
``llm_client``         an :class:`~pytest_iterate.client.client.LLMClient` (async, closed after)
``llm_cache``          a :class:`~pytest_iterate.cache.tiered.ResponseCache` in ``tmp_path``
``token_guard``        a :class:`~pytest_iterate.tokens.TokenGuard`
``llm_pipeline``       the cached :class:`~pytest_iterate.pipeline.runner.Pipeline`, every stage
``iterate_bench``      ``await iterate_bench(...)`` runs a workload through a pipeline with a load
                       shape and returns the scenario statistics (``pytest_iterate.harness.stats.summarize``);
                       with ``--iterate`` they go into the report; ``iterate_budget`` checks them
=====================  ======================================================================

Async fixtures use ``pytest_asyncio.fixture`` with the function loop scope, so they
work in strict and auto mode. This module is loaded on every pytest start (the plugin
registers it), so the library (aiohttp, prometheus-client, tiktoken: tens of ms) is
imported inside each fixture, when a test first asks for it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import pytest_asyncio

if TYPE_CHECKING:
    from pytest_iterate.cache.tiered import ResponseCache
    from pytest_iterate.client.client import LLMClient
    from pytest_iterate.client.config import IterateConfig
    from pytest_iterate.client.metrics import IterateMetrics
    from pytest_iterate.doubles.mock.core import MockLLM
    from pytest_iterate.endpoint import EndpointSpec
    from pytest_iterate.harness.summary import ScenarioSummary
    from pytest_iterate.pipeline.design import DesignRequest
    from pytest_iterate.pipeline.runner import Pipeline
    from pytest_iterate.plugin.options import IterateOptions
    from pytest_iterate.tokens.guard import TokenGuard

from pytest_iterate.plugin.state import get_options, get_session

__all__ = [
    "BENCH_KEY",
    "IterateBench",
    "MockServerURL",
    "iterate_bench",
    "iterate_config",
    "iterate_metrics",
    "iterate_options",
    "llm_cache",
    "llm_client",
    "llm_pipeline",
    "mock_llm",
    "mock_llm_server",
    "token_guard",
]

BENCH_KEY = pytest.StashKey[list["ScenarioSummary"]]()


def _spec(request: pytest.FixtureRequest, target: str) -> EndpointSpec:
    """The mock's knobs from indirect parametrization: ``profile``, ``faults``, ``seed``,
    ``context_window``; any other key goes to ``MockLLM``."""
    from pytest_iterate.endpoint import EndpointSpec

    param = getattr(request, "param", None)
    knobs = dict(param) if isinstance(param, dict) else {}
    return EndpointSpec(
        target,
        profile=knobs.pop("profile", get_options(request.config).profile),
        faults=knobs.pop("faults", None),
        seed=knobs.pop("seed", 0),
        context_window=knobs.pop("context_window", None),
        mock_options=knobs,
    )


@pytest.fixture
def iterate_options(request: pytest.FixtureRequest) -> IterateOptions:
    return get_options(request.config)


@pytest.fixture
def mock_llm(request: pytest.FixtureRequest) -> Iterator[MockLLM]:
    """The simulator in-process: httpx calls to ``MOCK_BASE_URL`` are answered by it."""
    from pytest_iterate.endpoint import serve

    with serve(_spec(request, "inprocess")) as endpoint:
        assert endpoint.core is not None
        yield endpoint.core


class MockServerURL(str):
    """The mock server's base URL; ``.core`` is the MockLLM answering it (stats, call log)."""

    core: MockLLM


@pytest.fixture
def mock_llm_server(request: pytest.FixtureRequest) -> Iterator[MockServerURL]:
    """The loopback mock server in a background thread (any event loop can call it)."""
    from pytest_iterate.endpoint import serve

    with serve(_spec(request, "mock")) as endpoint:
        assert endpoint.core is not None
        url = MockServerURL(endpoint.base_url)
        url.core = endpoint.core
        yield url


@pytest.fixture
def iterate_config(request: pytest.FixtureRequest, tmp_path: Path) -> IterateConfig:
    """Pipeline settings for the session's endpoint; nothing is written outside ``tmp_path``."""
    from pytest_iterate.client.config import IterateConfig

    opts = get_options(request.config)
    base_url = str(request.getfixturevalue("mock_llm_server")) if opts.is_mock else opts.endpoint
    pyproject = request.config.rootpath / "pyproject.toml"
    return IterateConfig.load(
        {
            "base_url": base_url,
            "model": opts.model,
            "api_key_env": opts.api_key_env,
            "cache_dir": str(tmp_path / "iterate-cache"),
            "store_path": ":memory:",
        },
        pyproject=pyproject if pyproject.is_file() else None,
    )


@pytest.fixture
def iterate_metrics() -> IterateMetrics:
    from pytest_iterate.client.metrics import IterateMetrics

    return IterateMetrics()


@pytest_asyncio.fixture(loop_scope="function")
async def llm_client(
    iterate_config: IterateConfig, iterate_metrics: IterateMetrics
) -> AsyncIterator[LLMClient]:
    from pytest_iterate.client.client import LLMClient

    async with LLMClient(iterate_config, metrics=iterate_metrics) as client:
        yield client


@pytest.fixture
def llm_cache(iterate_config: IterateConfig, iterate_metrics: IterateMetrics) -> Iterator[ResponseCache]:
    from pytest_iterate.cache.tiered import ResponseCache

    cache = ResponseCache(iterate_config, iterate_metrics)
    try:
        yield cache
    finally:
        cache.close()


@pytest.fixture
def token_guard(iterate_config: IterateConfig, iterate_metrics: IterateMetrics) -> TokenGuard:
    from pytest_iterate.tokens.guard import TokenGuard

    return TokenGuard(iterate_config, metrics=iterate_metrics)


@pytest_asyncio.fixture(loop_scope="function")
async def llm_pipeline(
    iterate_config: IterateConfig, iterate_metrics: IterateMetrics
) -> AsyncIterator[Pipeline]:
    from pytest_iterate.pipeline.runner import Pipeline

    async with Pipeline.from_config(iterate_config, metrics=iterate_metrics) as pipeline:
        yield pipeline


class IterateBench:
    """``await bench(workload=None, *, pipeline=None, concurrency=None, load=None, requests=None,
    name=None)``.

    ``workload``: a JSONL path or a list of design requests (default: the session's
    workload); ``pipeline``: a pipeline to drive (default: a fresh cached pipeline on
    ``config``); ``load``: a shape string (``closed:5``, ``rate:10``, ``poisson:10``) or
    ``concurrency`` for a closed loop (default: the top ``--iterate-concurrency``).
    Returns the scenario's :class:`~pytest_iterate.harness.summary.ScenarioSummary`;
    each run is kept in :attr:`runs`.
    """

    def __init__(self, item: pytest.Item, config: IterateConfig) -> None:
        self._item = item
        self._config = config
        self.runs: list[ScenarioSummary] = []

    async def __call__(
        self,
        workload: str | Path | Sequence[DesignRequest] | None = None,
        *,
        pipeline: Pipeline | None = None,
        concurrency: int | None = None,
        load: str | None = None,
        requests: int | None = None,
        name: str | None = None,
    ) -> ScenarioSummary:
        from pytest_iterate.harness.loads import ClosedLoop, parse_load
        from pytest_iterate.harness.runner import run_load
        from pytest_iterate.pipeline.runner import Pipeline
        from pytest_iterate.pipeline.workload import load_workload, standard_workload_path

        opts = get_options(self._item.config)
        if workload is None or isinstance(workload, (str, Path)):
            items = load_workload(workload or opts.workload or standard_workload_path())
        else:
            items = list(workload)
        shape = parse_load(load) if load else ClosedLoop(concurrency or max(opts.concurrency))
        label = name or f"bench:{self._item.nodeid}#{len(self.runs) + 1}"
        pipe = pipeline if pipeline is not None else Pipeline.from_config(self._config)
        try:
            run = await run_load(pipe.run, items, shape, requests=requests or len(items))
        finally:
            if pipeline is None:
                await pipe.aclose()
        summary = run.summary(label).with_info(test=self._item.nodeid)
        self.runs.append(summary)
        self._item.stash.setdefault(BENCH_KEY, []).append(summary)
        session = get_session(self._item.config)
        if session is not None:
            session.add_bench(summary)
        self._item.user_properties.append((f"{label}.mean_s", summary.latency_s.mean))
        self._item.user_properties.append((f"{label}.p95_s", summary.latency_s.p95))
        return summary


@pytest.fixture
def iterate_bench(request: pytest.FixtureRequest, iterate_config: IterateConfig) -> IterateBench:
    """Run a workload through a pipeline with a load shape; see :class:`IterateBench`."""
    return IterateBench(request.node, iterate_config)

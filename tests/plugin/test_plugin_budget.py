"""iterate_bench + @pytest.mark.iterate_budget as a user writes them, and every fixture under -W error."""

from __future__ import annotations

import os

import pytest

ARGS = ("-p", "no:randomly", "-W", "error", "--iterate-profile=fast")


@pytest.fixture(autouse=True)
def _project(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("ITERATE") or name.endswith("API_KEY"):
            monkeypatch.delenv(name)
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")


BENCH_TESTS = """
    import pytest

    @pytest.mark.iterate_budget(mean=5.0, p95=10.0, error_rate=0.01)
    @pytest.mark.asyncio
    async def test_within_budget(iterate_bench):
        await iterate_bench(requests=10, concurrency=5)

    @pytest.mark.iterate_budget(mean=0.0000001)
    @pytest.mark.asyncio
    async def test_mean_over_budget(iterate_bench):
        await iterate_bench(requests=5, concurrency=5)

    @pytest.mark.iterate_budget(hit_rate=0.99)
    @pytest.mark.asyncio
    async def test_hit_rate_under_budget(iterate_bench):
        await iterate_bench(requests=5, concurrency=1)

    @pytest.mark.iterate_budget(mean=1.0)
    def test_budget_without_bench():
        pass
"""


def test_budget_passes_and_fails_as_it_should(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_bench=BENCH_TESTS)
    result = pytester.runpytest(*ARGS)
    result.assert_outcomes(passed=1, failed=3)
    result.stdout.fnmatch_lines(
        [
            "*iterate_budget exceeded:",
            "*bench:test_bench.py::test_mean_over_budget#1: mean observed * s vs budget <= 1e-07 s",
        ]
    )
    result.stdout.fnmatch_lines(["*hit_rate observed 0.00% vs budget >= 99.00%"])
    result.stdout.fnmatch_lines(["*iterate_budget needs at least one iterate_bench run in the test"])
    assert not (pytester.path / "reports").exists()  # no --iterate: nothing written


def test_unknown_budget_key_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_bad="""
        import pytest

        @pytest.mark.iterate_budget(median=1.0)
        def test_x():
            pass
    """
    )
    result = pytester.runpytest(*ARGS)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["*unknown iterate_budget key(s) 'median'; accepted: mean, p95, error_rate, hit_rate*"]
    )


def test_non_number_budget_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_bad="""
        import pytest

        @pytest.mark.iterate_budget(p95="fast")
        def test_x():
            pass
    """
    )
    result = pytester.runpytest(*ARGS)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*iterate_budget(p95='fast') is not a number*"])


def test_every_fixture_works_in_strict_mode_without_warnings(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_fixtures="""
        import httpx
        import pytest
        from pytest_iterate.doubles.mock.respx_router import MOCK_BASE_URL
        from pytest_iterate.pipeline.design import DesignRequest
        from pytest_iterate.client.types import LLMRequest

        REQ = LLMRequest(messages=({"role": "user", "content": "say hi"},), max_tokens=16)

        @pytest.mark.asyncio
        async def test_client(llm_client, mock_llm_server, iterate_metrics):
            response = await llm_client.call(REQ)
            assert response.text and mock_llm_server.startswith("http://127.0.0.1:")
            assert len(mock_llm_server.core.calls) == 1
            assert "iterate_requests_total" in iterate_metrics.exposition().decode()

        @pytest.mark.asyncio
        async def test_pipeline(llm_pipeline):
            result = await llm_pipeline.run(DesignRequest.from_json(
                {"id": "x", "title": "Stack", "requirements": ["push and pop"]}))
            assert result.ok and [t.name for t in result.stages][0] == "prompt_build"

        @pytest.mark.asyncio
        async def test_in_process_mock(mock_llm):
            async with httpx.AsyncClient() as client:
                r = await client.post(MOCK_BASE_URL + "/chat/completions",
                                      json={"model": "gpt-4o-mini",
                                            "messages": [{"role": "user", "content": "x"}]})
            assert r.status_code == 200 and len(mock_llm.calls) == 1

        @pytest.mark.parametrize("mock_llm_server", [{"faults": ["1:503"]}], indirect=True)
        @pytest.mark.asyncio
        async def test_scripted_failure_is_retried(llm_client, mock_llm_server):
            response = await llm_client.call(REQ)
            assert response.attempts == 2 and mock_llm_server.core.stats.faults

        def test_sync_fixtures(iterate_config, token_guard, llm_cache, iterate_options, tmp_path):
            assert iterate_config.cache_dir.startswith(str(tmp_path))
            assert iterate_options.profile == "fast"
            assert token_guard is not None and llm_cache is not None
    """
    )
    result = pytester.runpytest(*ARGS)
    result.assert_outcomes(passed=5)


def test_a_run_where_every_request_failed_misses_any_budget() -> None:
    from pytest_iterate.harness.summary import Distribution, ScenarioSummary
    from pytest_iterate.plugin.budget import Budget, violations

    summary = ScenarioSummary(
        name="bench:t#1",
        requests=5,
        errors=5,
        errors_by_kind={"ConnectError": 5},
        latency_s=Distribution.of([0.01, 0.01, 0.01, 0.02, 0.02]),
    )
    # the latency of 5 refused connections is far inside a 2 s budget: that must not pass
    assert violations(Budget({"mean": 2.0}), [summary]) == [
        "bench:t#1: nothing measured: all 5 requests failed (ConnectError 5)"
    ]
    ok = summary.replace(errors=1, errors_by_kind={"ConnectError": 1})
    assert violations(Budget({"mean": 2.0}), [ok]) == []

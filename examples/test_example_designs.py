"""What a user's own tests look like next to ``pytest --iterate``.

Run with the acceptance suite: ``pytest --iterate examples/`` (what ``make iterate`` does),
or alone: ``pytest examples/`` (the fixtures work without ``--iterate``; then nothing
is written). The endpoint is the embedded loopback mock unless ``--iterate-endpoint``
names a real one.
"""

from __future__ import annotations

import pytest

from pytest_iterate.pipeline.design import DesignRequest
from pytest_iterate.pipeline.workload import load_workload, standard_workload_path

DESIGN = DesignRequest.from_json(
    {"id": "example-lru", "title": "An LRU cache", "requirements": ["get and put in O(1)", "a max size"]}
)


@pytest.mark.asyncio
async def test_one_design_goes_through_every_stage(llm_pipeline) -> None:
    result = await llm_pipeline.run(DESIGN)
    assert result.ok, result.error
    assert [t.name for t in result.stages] == [
        "prompt_build",
        "cache_lookup",
        "token_guard",
        "llm_call",
        "post_process",
        "store",
    ]
    assert result.artifact is not None and result.artifact.valid


@pytest.mark.asyncio
async def test_a_repeated_design_is_answered_from_the_cache(llm_pipeline) -> None:
    first = await llm_pipeline.run(DESIGN)
    again = await llm_pipeline.run(DESIGN)
    # an answer the model stopped at max_tokens is cached too, and comes back still flagged
    assert again.cache_tier == "memory" and again.llm_calls == 0
    assert again.text == first.text and again.complete == first.complete


@pytest.mark.iterate_budget(mean=5.0, p95=8.0, error_rate=0.0)
@pytest.mark.asyncio
async def test_ten_designs_at_concurrency_five_stay_in_budget(iterate_bench) -> None:
    designs = load_workload(standard_workload_path())[:10]
    stats = await iterate_bench(designs, concurrency=5, name="example: 10 designs at concurrency 5")
    assert stats.requests == 10 and stats.errors == 0

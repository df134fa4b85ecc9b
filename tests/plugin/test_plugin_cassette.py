"""--iterate-cassette / --iterate-record-mode: record against an endpoint, replay with it gone."""

from __future__ import annotations

import os

import pytest


def test_record_then_replay_without_the_endpoint(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pytest_iterate.doubles.mock import MockLLM, MockServer

    for name in list(os.environ):
        if name.startswith("ITERATE") or name.endswith("API_KEY"):
            monkeypatch.delenv(name)
    from pytest_iterate.pipeline.workload import standard_workload_path

    lines = [ln for ln in standard_workload_path().read_text().splitlines() if ln.startswith("{")][:6]
    pytester.path.joinpath("tiny.jsonl").write_text("\n".join(lines) + "\n")
    pytester.makeini(
        "[pytest]\nasyncio_default_fixture_loop_scope = function\niterate_workload = tiny.jsonl\n"
    )
    core = MockLLM("fast")
    server = MockServer(core)
    server.start_in_thread()
    try:
        args = (
            "--iterate",
            "-p",
            "no:randomly",
            f"--iterate-endpoint={server.base_url}",
            "--iterate-criteria=latency.e2e_mean",
            "--iterate-cassette=answers.jsonl",
        )
        recorded = pytester.runpytest(*args, "--iterate-record-mode=all")
        recorded.assert_outcomes(passed=1)
        seen = core.stats.requests
        assert seen >= 6 and (pytester.path / "answers.jsonl").is_file()
    finally:
        server.stop()
    replayed = pytester.runpytest(*args, "--iterate-record-mode=none")  # the server is gone
    replayed.assert_outcomes(passed=1)
    assert core.stats.requests == seen

"""`pytest --iterate` in a temporary project: the acceptance suite, reports, gates, xdist."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pytest_iterate.pipeline.workload import standard_workload_path
from pytest_iterate.plugin.acceptance.criteria import CRITERIA

# the fast profile answers in milliseconds, so the event loop is busy nearly all the time
# (cpu.utilization measures exactly that and fails there, honestly); these tests are about the
# plugin, not the loop: they allow it. The v1 profile's run checks the default threshold.
FAST = ("--iterate", "--iterate-profile=fast", "-p", "no:randomly", "--iterate-threshold=cpu.utilization=100")


@pytest.fixture(autouse=True)
def _project(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("ITERATE") or name.endswith("API_KEY"):
            monkeypatch.delenv(name)
    lines = [ln for ln in standard_workload_path().read_text().splitlines() if ln.startswith("{")]
    small = lines[:16] + lines[:4]  # 20 requests, 4 exact duplicates
    pytester.path.joinpath("small.jsonl").write_text("\n".join(small) + "\n")
    pytester.makeini(
        "[pytest]\nasyncio_default_fixture_loop_scope = function\n"
        "iterate_workload = small.jsonl\niterate_concurrency = 1,5,10\n"
    )


def _report(pytester: pytest.Pytester, folder: str = "reports") -> dict:
    return json.loads((pytester.path / folder / "iterate-report.json").read_text())


def test_suite_passes_on_the_mock_and_writes_both_reports(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest(*FAST, "--junitxml=junit.xml", "-W", "error")
    result.assert_outcomes(passed=len(CRITERIA))
    result.stdout.fnmatch_lines(
        [
            "*= pytest-iterate =*",
            "latency.e2e_mean * PASS  observed * threshold <= 3 s",
            "degradation.busy_fast * PASS  observed * ms  threshold <= 50 ms",
            "report: */reports/iterate-report.json",
            "report: */reports/iterate-report.md",
        ]
    )
    report = _report(pytester)
    assert report["schema"] == "pytest-iterate/report/v1"
    assert [c["id"] for c in report["criteria"]] == [c.id for c in CRITERIA]
    assert all(c["passed"] is True and c["observed"] is not None for c in report["criteria"])
    names = {s["name"] for s in report["scenarios"]}
    expected = {"standard", "repeat", "faults", "retry_bound", "queue_10", "long_context", "concurrency_5"}
    assert expected <= names
    standard = next(s for s in report["scenarios"] if s["name"] == "standard")
    assert standard["requests"] == 20 and set(standard["stages"]) >= {"llm_call", "post_process"}
    md = (pytester.path / "reports" / "iterate-report.md").read_text()
    assert "latency.e2e_mean" in md
    junit = (pytester.path / "junit.xml").read_text()
    assert 'name="latency.e2e_mean.observed"' in junit and 'name="cache.hit_rate_repeat.threshold"' in junit
    # one line per scenario while the suite runs (not a terminal: no live line, no carriage return)
    out = result.stdout.str()
    for name in ("standard", "repeat", "concurrency_5", "queue_10", "faults", "long_context"):
        (line,) = [ln for ln in out.splitlines() if ln.startswith(f"iterate: {name}: ")]
        assert " requests, " in line and "cache hits " in line and line.endswith(" s]"), line
    assert "\r" not in out


def test_suite_node_ids_name_the_shipped_file_outside_the_rootdir(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest(*FAST, "--collect-only", "-q")
    assert result.ret == 0
    ids = [ln for ln in result.outlines if "test_criterion[" in ln]
    suite = "pytest_iterate/plugin/acceptance/test_acceptance.py"
    assert ids == [f"{suite}::test_criterion[{c.id}]" for c in CRITERIA]
    # the id is usable: --deselect takes it
    one = ids[0]
    result = pytester.runpytest(*FAST, "--collect-only", "-q", "--deselect", one)
    assert one not in result.outlines and ids[1] in result.outlines


def test_impossible_threshold_fails_exactly_that_criterion(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest(
        *FAST,
        "--iterate-criteria=latency.*,throughput.*",
        "--iterate-threshold=latency.overhead_mean=0.0000001",
    )
    result.assert_outcomes(passed=4, failed=1)
    result.stdout.fnmatch_lines(
        [
            "latency.overhead_mean failed: observed * s, threshold <= 1e-07 s (mean over 20 successful "
            "requests: stages around the call * ms, waiting inside the call (queue, backoff) * ms)",
            "latency.overhead_mean * FAIL  observed *",
            "FAILED *test_criterion?latency.overhead_mean?*",
        ]
    )
    report = _report(pytester)
    verdicts = {c["id"]: c["passed"] for c in report["criteria"]}
    assert verdicts == {
        "latency.e2e_mean": True,
        "latency.iteration_mean_c5": True,
        "latency.overhead_mean": False,
        "throughput.requests_per_min": True,
        "throughput.designs_100": True,
    }


def test_a_real_endpoint_skips_only_what_needs_the_mock_with_the_reason(
    pytester: pytest.Pytester, mock_llm_server: str
) -> None:
    # the mock on its own URL stands for any external endpoint: nothing is injected there
    result = pytester.runpytest(
        *FAST, f"--iterate-endpoint={mock_llm_server}", "-rs", "--iterate-criteria=errors.*,retries.*"
    )
    result.assert_outcomes(passed=1, skipped=1)
    result.stdout.fnmatch_lines(
        [
            "SKIPPED *retries.bounded: needs the embedded mock (fault injection, attempts counted by the "
            "endpoint)*"
        ]
    )
    report = _report(pytester)
    assert [(c["id"], c["passed"]) for c in report["criteria"]] == [
        ("errors.rate_with_retries", True),
        ("retries.bounded", None),
    ]
    (errors,) = [c for c in report["criteria"] if c["id"] == "errors.rate_with_retries"]
    assert "of the standard run still failed after retries; nothing injected against" in errors["note"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_unreachable_endpoint_fails_every_criterion_fast_with_the_reason(pytester: pytest.Pytester) -> None:
    url = f"http://127.0.0.1:{_free_port()}/v1"  # nothing listens there
    started = time.monotonic()
    result = pytester.runpytest(*FAST, f"--iterate-endpoint={url}", "--iterate-criteria=latency.*,cache.*")
    elapsed = time.monotonic() - started
    result.assert_outcomes(failed=4)
    result.stdout.fnmatch_lines(
        [
            f"latency.e2e_mean: nothing measured: endpoint {url} is unreachable "
            f"(cannot connect to {url}/models*start the server or fix "
            "--iterate-endpoint"
        ]
    )
    assert "Traceback" not in result.stdout.str() and "During handling" not in result.stdout.str()
    assert elapsed < 30  # one probe, not a workload of retries
    report = _report(pytester)
    assert all(c["passed"] is False and "unreachable" in c["note"] for c in report["criteria"])


def test_endpoint_answering_garbage_measures_nothing_and_says_why(pytester: pytest.Pytester) -> None:
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # wait until it listens
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.05)
        result = pytester.runpytest(
            *FAST,
            f"--iterate-endpoint=http://127.0.0.1:{port}/v1",
            "--iterate-criteria=latency.e2e_mean,throughput.designs_100",
        )
    finally:
        server.terminate()
        server.wait(timeout=10)
    # before, the latency of 20 failed requests passed latency.e2e_mean and designs_100
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines(
        [
            "latency.e2e_mean: nothing measured: scenario 'standard': all 20 requests "
            f"failed against http://127.0.0.1:{port}/v1; first error: ServerError: "
            "*answered HTTP 501*"
        ]
    )


def test_user_tests_run_next_to_the_suite_and_land_in_the_report(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_user="""
        import pytest

        @pytest.mark.asyncio
        async def test_bench(iterate_bench):
            stats = await iterate_bench(requests=8, concurrency=4, name="user-bench")
            assert stats.requests == 8
    """
    )
    result = pytester.runpytest(*FAST, "--iterate-criteria=cache.*", "test_user.py")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["bench user-bench: 8 requests, mean *"])
    assert "user-bench" in {s["name"] for s in _report(pytester)["scenarios"]}


def test_baseline_missing_then_saved_then_gated(pytester: pytest.Pytester) -> None:
    args = (*FAST, "--iterate-criteria=latency.e2e_mean")
    first = pytester.runpytest(
        *args,
        "--iterate-baseline=base/iterate-report.json",
        "--iterate-compare-fail=mean:10%",
        "--iterate-save-baseline=base",
    )
    assert first.ret == 0
    first.stdout.fnmatch_lines(["no baseline report at *base/iterate-report.json*", "baseline saved: *base*"])
    assert (pytester.path / "base" / "iterate-report.json").is_file()
    # a baseline 1000x faster than anything measurable: the gate must fail the run
    base = json.loads((pytester.path / "base" / "iterate-report.json").read_text())
    for scenario in base["scenarios"]:
        lat = scenario.get("latency_s")
        if lat:
            for key in list(lat):
                if isinstance(lat[key], float):
                    lat[key] /= 1000.0
        scenario.pop("samples_s", None)
        scenario.pop("sample_keys", None)
    Path(pytester.path / "base" / "iterate-report.json").write_text(json.dumps(base))
    second = pytester.runpytest(*args, "--iterate-baseline=base", "--iterate-compare-fail=mean:10%")
    assert second.ret == pytest.ExitCode.TESTS_FAILED
    second.stdout.fnmatch_lines(
        ["regression gate FAILED against base:", "  standard mean:10%: baseline *, current *, delta +*"]
    )


def test_xdist_merges_results_from_workers(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_user="""
        import pytest

        @pytest.mark.asyncio
        async def test_bench(iterate_bench):
            await iterate_bench(requests=4, concurrency=2, name="xdist-bench")
    """
    )
    result = pytester.runpytest_subprocess(*FAST, "-n", "2", "test_user.py")
    result.assert_outcomes(passed=len(CRITERIA) + 1)
    report = _report(pytester)
    assert len(report["criteria"]) == len(CRITERIA)
    names = [s["name"] for s in report["scenarios"]]
    assert "xdist-bench" in names and names.count("standard") == 1


@pytest.mark.slow
def test_defaults_with_the_v1_profile_pass(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    result = pytester.runpytest_subprocess("--iterate", "-p", "no:randomly")
    result.assert_outcomes(passed=len(CRITERIA))


def test_credentials_in_the_endpoint_url_never_reach_the_reports(
    pytester: pytest.Pytester, mock_llm_server: str
) -> None:
    sentinel = "sk-SENTINEL-in-url-8812"
    url = mock_llm_server.replace("http://", f"http://bob:{sentinel}@")
    result = pytester.runpytest(
        *FAST, f"--iterate-endpoint={url}", "--iterate-criteria=latency.e2e_mean,errors.*"
    )
    result.assert_outcomes(passed=2)
    assert sentinel not in result.stdout.str() + result.stderr.str()
    written = list((pytester.path / "reports").iterdir())
    assert len(written) == 5
    for path in written:
        assert sentinel not in path.read_text(), path.name
    assert "http://***@127.0.0.1" in (pytester.path / "reports" / "iterate-report.json").read_text()

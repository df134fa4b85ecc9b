"""The regression gate as CI uses it: reruns pass, a slower endpoint fails, nothing partial is
kept as a baseline, bad paths stop the run before it starts."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pytest_iterate.pipeline.workload import standard_workload_path
from pytest_iterate.plugin.acceptance.criteria import CRITERIA


def _profile(path: Path, scale: float) -> Path:
    """A mock profile of about 100 ms a request (times ``scale``): short runs, yet far above the
    5 ms floor and above the tens of ms a loaded 2-core machine adds to a request."""
    path.write_text(
        json.dumps(
            {
                "name": f"gate-x{scale:g}",
                "ttft_base_s": {"dist": "lognormal", "mean": 0.08 * scale, "std": 0.016 * scale},
                "itl_s": {"dist": "fixed", "mean": 0.0004 * scale},
                "output_tokens": {"dist": "normal", "mean": 50, "std": 8, "min": 20, "max": 90},
                "capacity": 64,
                "context_window": 16384,
            }
        )
    )
    return path


@pytest.fixture(autouse=True)
def _project(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("ITERATE") or name.endswith("API_KEY"):
            monkeypatch.delenv(name)
    lines = [ln for ln in standard_workload_path().read_text().splitlines() if ln.startswith("{")]
    pytester.path.joinpath("work.jsonl").write_text("\n".join(lines[:40]) + "\n")
    pytester.makeini(
        "[pytest]\nasyncio_default_fixture_loop_scope = function\n"
        "iterate_workload = work.jsonl\niterate_concurrency = 4\n"
    )
    _profile(pytester.path / "normal.json", 1.0)
    _profile(pytester.path / "slow.json", 1.5)


# the criteria that read the standard run (40 requests, ~1 s): the 10-request concurrency-5
# run is too short to outlast a burst from another process on a shared 2-core machine, and a
# burst during a run is a real slowdown of that run, which the gate rightly reports
GATE = (
    "--iterate",
    "-p",
    "no:randomly",
    "--iterate-criteria=latency.e2e_mean,latency.overhead_mean,throughput.*",
    "--iterate-compare-fail=p95:10%",
    "--iterate-compare-fail=mean:10%",
)


def test_identical_reruns_pass_the_gate_and_a_50_percent_slower_endpoint_fails_it(
    pytester: pytest.Pytester,
) -> None:
    first = pytester.runpytest(*GATE, "--iterate-profile=normal.json", "--iterate-save-baseline=base")
    assert first.ret == 0
    for _ in range(2):
        again = pytester.runpytest(*GATE, "--iterate-profile=normal.json", "--iterate-baseline=base")
        assert again.ret == 0, again.stdout.str()
        again.stdout.fnmatch_lines(["RESULT: pass"])
    slow = pytester.runpytest(*GATE, "--iterate-profile=slow.json", "--iterate-baseline=base")
    assert slow.ret == pytest.ExitCode.TESTS_FAILED
    slow.stdout.fnmatch_lines(
        [
            "WARNING: the runs differ in profile: baseline 'normal.json', current 'slow.json'",
            "regression gate FAILED against base:",
            "  standard p95:10%: baseline * ms, current * ms, delta +* ms (+*%), p=*",
        ]
    )


def test_a_run_stopped_early_is_marked_incomplete_and_never_saved_as_a_baseline(
    pytester: pytest.Pytester,
) -> None:
    result = pytester.runpytest(
        "--iterate",
        "-p",
        "no:randomly",
        "--iterate-profile=normal.json",
        "-x",
        "--iterate-criteria=latency.e2e_mean,throughput.*",
        "--iterate-threshold=latency.e2e_mean=0.000001",
        "--iterate-save-baseline=base",
    )
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(
        [
            "INCOMPLETE run: stopped early (*): 2 of 3 selected criteria did not run",
            "INCOMPLETE run: * no gate, no baseline saved",
        ]
    )
    assert not (pytester.path / "base").exists()
    report = json.loads((pytester.path / "reports" / "iterate-report.json").read_text())
    assert (
        report["complete"] is False and "2 of 3 selected criteria did not run" in report["incomplete_reason"]
    )
    assert (
        (pytester.path / "reports" / "iterate-report.md")
        .read_text()
        .startswith("# pytest-iterate report (INCOMPLETE)")
    )
    assert "class='banner'" in (pytester.path / "reports" / "iterate-report.html").read_text()
    # a deselected set is a complete run that says how much it measured
    ok = pytester.runpytest(
        "--iterate",
        "-p",
        "no:randomly",
        "--iterate-profile=normal.json",
        "--iterate-criteria=latency.e2e_mean",
        "--iterate-save-baseline=base",
    )
    assert ok.ret == 0
    saved = json.loads((pytester.path / "base" / "iterate-report.json").read_text())
    assert saved["complete"] is True and saved["run"]["criteria_selected"] == f"1 of {len(CRITERIA)}"


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_mid_run_leaves_the_baseline_untouched_and_says_incomplete(pytester: pytest.Pytester) -> None:
    first = pytester.runpytest(
        "--iterate",
        "-p",
        "no:randomly",
        "--iterate-profile=normal.json",
        "--iterate-criteria=latency.e2e_mean",
        "--iterate-save-baseline=base",
    )
    assert first.ret == 0
    saved = (pytester.path / "base" / "iterate-report.json").read_bytes()
    slow = _profile(pytester.path / "crawl.json", 50.0)  # ~2 s a request: the run is still going
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pytest",
            "--iterate",
            "-p",
            "no:randomly",
            "-v",
            f"--iterate-profile={slow}",
            "--iterate-save-baseline=base",
            "-p",
            "no:cacheprovider",
        ],
        cwd=pytester.path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        # a shell starts background jobs with SIGINT ignored and children inherit that: the
        # child gets Ctrl-C's default, as in a terminal, however this suite was started
        preexec_fn=_default_sigint,
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + 60
    for line in proc.stdout:  # wait until the suite has started measuring
        if "test_criterion[" in line or time.monotonic() > deadline:
            break
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)
    out = proc.stdout.read()
    assert proc.wait(timeout=60) == pytest.ExitCode.INTERRUPTED, out
    assert "INCOMPLETE run: interrupted after" in out, out
    assert (pytester.path / "base" / "iterate-report.json").read_bytes() == saved
    report = json.loads((pytester.path / "reports" / "iterate-report.json").read_text())
    assert report["complete"] is False and report["incomplete_reason"].startswith("interrupted")


@pytest.mark.parametrize(
    ("setup", "args", "message"),
    [
        (
            lambda p: p.joinpath("out").write_text("x"),
            ["--iterate-report-dir=out"],
            "*--iterate-report-dir: */out is a file, not a folder*",
        ),
        (
            lambda p: p.joinpath("b.json").write_text("{}"),
            ["--iterate-baseline=b.json"],
            "*--iterate-baseline: b.json is not a pytest-iterate report: the schema is None*",
        ),
        (
            lambda p: p.joinpath("b.py").write_text("import os\n"),
            ["--iterate-baseline=b.py"],
            "*--iterate-baseline: b.py is not a pytest-iterate report: not JSON*",
        ),
        (
            lambda p: p.joinpath("b.json").write_text(
                '{"schema": "pytest-iterate/report/v1", "complete": false, '
                '"incomplete_reason": "interrupted", "scenarios": []}'
            ),
            ["--iterate-baseline=b.json"],
            "*--iterate-baseline: the baseline b.json is from a run that did not finish (interrupted)*",
        ),
    ],
)
def test_a_path_that_cannot_work_is_a_usage_error_before_the_run(
    pytester: pytest.Pytester,
    setup,
    args: list[str],
    message: str,  # type: ignore[no-untyped-def]
) -> None:
    setup(pytester.path)
    result = pytester.runpytest("--iterate", "-p", "no:randomly", *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])
    assert not (pytester.path / "reports").exists()

"""``iterate-bench`` as a user runs it: a real loopback server, real report files."""

from __future__ import annotations

import argparse
import itertools
import json
import socket
from pathlib import Path
from typing import Any

import pytest

from pytest_iterate.harness.cli import build_parser, main


def test_run_sweep_writes_reports_and_compare_gates(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = tmp_path / "base"
    code = main(
        [
            "run",
            "--target",
            "loopback",
            "--raw",
            "--mock-latency",
            "0.01",
            "--concurrency",
            "1,4",
            "--rate",
            "50",
            "--requests",
            "30",
            "--warmup",
            "2",
            "--quiet",
            "--report-dir",
            str(base),
        ]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    assert "closed:1: 30 requests" in out and "closed:4: 30 requests" in out and "rate:50: 30 requests" in out
    report = json.loads((base / "iterate-report.json").read_text())
    assert [s["name"] for s in report["scenarios"]] == ["closed:1", "closed:4", "rate:50"]
    assert all(s["latency_s"]["min"] >= 0.01 for s in report["scenarios"])
    assert {p.name for p in base.iterdir()} == {
        "iterate-report.json",
        "iterate-report.md",
        "iterate-report.html",
        "benchmark.json",
        "metrics.prom",
    }

    # identical report: pass
    code = main(["compare", str(base), str(base / "iterate-report.json"), "--fail-on", "p95:10%"])
    out = capsys.readouterr().out
    assert code == 0 and "RESULT: pass" in out, out

    # every latency doubled (+11 ms, above the 5 ms noise floor): fail with exit 1
    slow = json.loads(json.dumps(report))
    for s in slow["scenarios"]:
        s["samples_s"] = [v * 2 for v in s["samples_s"]]
        s["latency_s"] = {k: (v * 2 if isinstance(v, float) else v) for k, v in s["latency_s"].items()}
    (tmp_path / "slow.json").write_text(json.dumps(slow))
    code = main(
        [
            "compare",
            str(base),
            str(tmp_path / "slow.json"),
            "--fail-on",
            "p95:10%",
            "--fail-on",
            "error_rate:+0.5",
        ]
    )
    out = capsys.readouterr().out
    assert code == 1 and "error_rate:+0.5" in out, out
    for name in ("closed:1", "closed:4", "rate:50"):
        assert f"REGRESSION {name} p95:10%: baseline " in out, out
    # the same doubling is within the noise floor when the floor is set above it
    code = main(
        ["compare", str(base), str(tmp_path / "slow.json"), "--fail-on", "p95:10%", "--min-delta", "1"]
    )
    assert code == 0, capsys.readouterr().out


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{}", "schema is None"),
        ("import os\n", "not JSON"),
        (
            '{"schema": "pytest-iterate/report/v1", "complete": false, "incomplete_reason": "interrupted", '
            '"scenarios": []}',
            "did not finish (interrupted)",
        ),
    ],
)
def test_compare_exits_2_on_a_baseline_that_is_not_a_complete_report(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str, message: str
) -> None:
    bad = tmp_path / "baseline.json"
    bad.write_text(content)
    good = tmp_path / "current.json"
    good.write_text('{"schema": "pytest-iterate/report/v1", "scenarios": []}')
    assert main(["compare", str(bad), str(good)]) == 2
    err = capsys.readouterr().err
    assert message in err and str(bad) in err
    assert main(["compare", str(good), str(bad)]) == 2  # the current report is checked the same way


def test_compare_without_baseline_is_a_message_not_a_crash(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["compare", str(tmp_path / "missing.json"), str(tmp_path / "x.json")]) == 0
    assert "no baseline report at" in capsys.readouterr().out


def report_of(folder: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((folder / "iterate-report.json").read_text())
    return data


def test_saturate_starts_at_one_workers_rate_and_warms_up_every_step(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        [
            "run",
            "--target",
            "loopback",
            "--raw",
            "--mock-latency",
            "0.02",
            "--saturate",
            "--slo",
            "p95=0.5",
            "--max-rate",
            "40",
            "--requests",
            "60",
            "--warmup",
            "2",
            "--report-dir",
            str(tmp_path),
            "--formats",
            "json,html",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    # one worker manages ~45 req/s at 20 ms: the search starts at 20 (1-2-5 below it; 10 on a
    # loaded machine) and doubles up to --max-rate
    assert "highest rate meeting p95<=0.5: 40.0 req/s" in out
    rates = [s["info"]["rate_rps"] for s in report_of(tmp_path)["scenarios"]]
    assert rates[0] in (10, 20) and rates[-1] == 40 and all(b == 2 * a for a, b in itertools.pairwise(rates))
    for rate in rates:
        assert f"rate:{rate:g}: 60 requests, 0 errors" in out, out
    report = json.loads((tmp_path / "iterate-report.json").read_text())
    criterion = report["criteria"][0]
    assert criterion["id"] == "saturation.max_rps" and criterion["observed"] == 40.0
    assert f"doubled from {rates[0]:g} req/s" in criterion["note"]
    assert [s["warmup"] for s in report["scenarios"]] == [2] * len(rates)
    assert all(1 <= s["max_inflight"] <= 4 for s in report["scenarios"])
    assert "Throughput vs p95" in (tmp_path / "iterate-report.html").read_text()


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["run", "--concurrency", "1,x"], "'1,x' is not a list of whole numbers >= 1"),
        (["run", "--concurrency", "0"], "'0' is not a list of whole numbers >= 1"),
        (["run", "--rate", "-3"], "'-3' is not a list of numbers > 0"),
        (["run", "--rate", "nan"], "'nan' is not a list of numbers > 0"),
        (["run", "--duration", "inf"], "'inf' is not a finite number"),
        (["run", "--slo", "p97=1"], "bad objective 'p97=1'"),
        (["run", "--formats", "json,pdf"], "unknown format(s) ['pdf']"),
        (["compare", "a", "b", "--fail-on", "p95:lots"], "bad rule 'p95:lots'"),
        (["run", "--saturate"], "--saturate needs an objective"),
    ],
)
def test_bad_option_values_name_the_value(
    argv: list[str], needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    assert needle in capsys.readouterr().err


def test_help_lists_the_commands() -> None:
    parser = build_parser()
    (commands,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    assert set(commands.choices) == {"run", "compare", "serve-mock", "serve-loopback", "serve-pipeline"}
    text = parser.format_help()
    assert all(f"    {cmd} " in text for cmd in commands.choices)  # each listed with its help line


@pytest.mark.parametrize("target", ["mock", "inprocess"])
def test_run_drives_the_pipeline_against_the_project_mock(
    target: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    code = main(
        [
            "run",
            "--target",
            target,
            "--profile",
            "fast",
            "--concurrency",
            "4",
            "--requests",
            "12",
            "--warmup",
            "2",
            "--quiet",
            "--report-dir",
            str(tmp_path / "r"),
            "--formats",
            "json",
        ]
    )
    assert code == 0, capsys.readouterr().err
    report = json.loads((tmp_path / "r" / "iterate-report.json").read_text())
    (scenario,) = report["scenarios"]
    assert scenario["requests"] == 12 and scenario["errors"] == 0
    assert {"prompt_build", "llm_call", "post_process"} <= set(scenario["stages"])
    assert scenario["tokens"]["completion"] > 0 and scenario["ttft_s"]["count"] == 12
    assert report["run"]["target"] == {"mock": "mock (fast)", "inprocess": "mock (fast), in-process"}[target]
    assert list(tmp_path.iterdir()) == [tmp_path / "r"]  # nothing written into the current directory


def test_run_where_every_request_fails_exits_1_and_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
    code = main(
        [
            "run",
            "--target",
            url,
            "--concurrency",
            "2",
            "--requests",
            "4",
            "--quiet",
            "--report-dir",
            str(tmp_path),
            "--formats",
            "json",
        ]
    )
    captured = capsys.readouterr()
    assert code == 1, captured.out + captured.err
    assert "closed:2: 4 requests, 4 errors (ConnectError 4)" in captured.out
    assert "nothing measured: every request failed in closed:2" in captured.err and url in captured.err
    report = json.loads((tmp_path / "iterate-report.json").read_text())  # the evidence is kept
    assert report["scenarios"][0]["errors_by_kind"] == {"ConnectError": 4}

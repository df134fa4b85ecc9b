"""``iterate-bench run --workers N`` as a user runs it: real worker processes, a fixed-latency
server in a process of its own (``iterate-bench serve-loopback``), real report files."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from bench_process import BENCH, serving

from pytest_iterate.harness.cli import main
from pytest_iterate.harness.loads import ConstantRate
from pytest_iterate.harness.targets import SendOptions
from pytest_iterate.harness.workers import WorkerPool, WorkerSetup
from pytest_iterate.harness.workloads import ping_workload

LATENCY_S = 0.02


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    """``iterate-bench serve-loopback`` (every answer after 20 ms) in its own process."""
    with serving("serve-loopback", "--latency", str(LATENCY_S)) as url:
        yield url


def _report(folder: Path) -> dict:
    return json.loads((folder / "iterate-report.json").read_text())


def test_two_workers_measure_what_one_process_measures_on_the_same_schedule(
    server: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = ["run", "--target", server, "--raw", "--poisson", "200", "--seed", "5", "--duration", "1.0"]
    run += ["--warmup", "20", "--quiet"]
    assert main([*run, "--report-dir", str(tmp_path / "one")]) == 0
    assert main([*run, "--workers", "2", "--report-dir", str(tmp_path / "two")]) == 0
    out = capsys.readouterr().out
    assert "workers: 2 processes (pid " in out and "  worker 2: " in out, out
    one, two = (_report(tmp_path / name)["scenarios"][0] for name in ("one", "two"))
    # the same seeded schedule: as many requests, sent at the same offsets
    assert two["requests"] == one["requests"] > 150 and one["errors"] == two["errors"] == 0
    assert [p[0] for p in two["timeline"]] == pytest.approx([p[0] for p in one["timeline"]], abs=1e-6)
    # the same server answering in 20 ms: what differs is the client side (sending, loopback TCP,
    # scheduling lag), about 1 ms at the median here; on a loaded 2-core machine the medians of
    # two runs moved by up to ~3 ms and the p90s by more (a neighbour's burst lands in one run):
    # 5 ms for the p50 and 15 ms for the p90 catch a merge that loses, repeats or averages samples
    for run_ in (one, two):
        assert run_["latency_s"]["min"] >= LATENCY_S
    assert abs(two["latency_s"]["p50"] - one["latency_s"]["p50"]) < 0.005
    assert abs(two["latency_s"]["p90"] - one["latency_s"]["p90"]) < 0.015
    # the report says it used two workers, and what each sent
    report = _report(tmp_path / "two")
    assert report["run"]["workers"] == 2 and _report(tmp_path / "one")["run"]["workers"] == 1
    shares = two["workers"]
    assert [w["worker"] for w in shares] == [1, 2]
    assert sum(w["requests"] for w in shares) == two["requests"]
    assert abs(shares[0]["requests"] - shares[1]["requests"]) <= 1  # dealt round-robin
    assert all(w["scheduling_lag_s"]["count"] == w["requests"] for w in shares)
    assert two["max_inflight"] == sum(w["max_inflight"] for w in shares)
    md = (tmp_path / "two" / "iterate-report.md").read_text()
    assert "## Workers" in md and "| poisson:200 | all 2 |" in md
    # a baseline from one process is comparable, and the comparison says what differs
    main(["compare", str(tmp_path / "one"), str(tmp_path / "two")])
    assert "WARNING: the runs differ in workers: baseline 1, current 2" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--workers", "0"], "argument --workers: '0' is out of range; give a whole number >= 1"),
        (["--workers", "two"], "argument --workers: 'two' is not a whole number"),
        (["--workers", "2", "--saturate", "--slo", "p95=1"], "--workers 2: --saturate runs in one process"),
        (["--workers", "2", "--target", "inprocess"], "--workers 2: the in-process mock lives inside one"),
    ],
)
def test_bad_worker_options_are_refused_naming_the_value(
    flags: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["run", *flags])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_a_step_the_workers_cannot_share_is_refused_before_any_starts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["run", "--workers", "3", "--concurrency", "4,2", "--report-dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2
    assert "--workers 3 is more than the 2 concurrent users of closed:2" in err, err
    assert not list(tmp_path.iterdir())  # nothing ran, nothing written


def _alive(pid: int) -> bool:
    """The process exists and has not exited (a zombie has)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


def _start_run(server: str, report_dir: Path) -> tuple[subprocess.Popen[str], list[int]]:
    args = ["run", "--target", server, "--raw", "--rate", "100", "--duration", "30", "--workers", "2"]
    proc = subprocess.Popen(
        [str(BENCH), *args, "--report-dir", str(report_dir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.startswith("workers: 2 processes (pid "), line
    pids = [int(p) for p in line.split("(pid ")[1].split(")")[0].split(", ")]
    return proc, pids


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads process states from /proc")
def test_a_worker_that_dies_fails_the_run_naming_it_and_stops_the_others(server: str, tmp_path: Path) -> None:
    proc, (first, second) = _start_run(server, tmp_path)
    try:
        time.sleep(1.0)  # the step is running (it starts 0.5 s after the workers are ready)
        os.kill(second, signal.SIGKILL)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 1, out + err
    assert f"worker 2 of 2 (pid {second}) was killed by SIGKILL while running rate:100" in err, err
    assert not _alive(first)
    report = _report(tmp_path)
    assert report["complete"] is False and "worker 2 of 2" in report["incomplete_reason"]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads process states from /proc")
def test_workers_do_not_outlive_a_killed_parent(server: str, tmp_path: Path) -> None:
    proc, pids = _start_run(server, tmp_path)
    proc.kill()  # SIGKILL: the parent cleans nothing up
    proc.communicate(timeout=30)
    deadline = time.monotonic() + 20
    while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [pid for pid in pids if _alive(pid)]


async def test_a_setting_a_worker_cannot_use_is_a_usage_error_naming_the_worker(server: str) -> None:
    setup = WorkerSetup(server, ping_workload(), {"max_attempts": 0}, SendOptions(raw=True))
    with pytest.raises(ValueError, match=r"worker 1 of 1 failed while starting: ConfigError: .*max_attempts"):
        async with WorkerPool(setup, 1) as pool:
            await pool.run(ConstantRate(10), requests=1)

"""Locust driving the pipeline through ``pytest_iterate.integrations.locust`` (examples/locustfile.py),
as its users run it: headless, alone and as a master with two workers, on loopback against
``iterate-bench serve-mock``; the reports it writes are read by ``iterate-bench compare``.

Locust patches the standard library with gevent when it is imported: it runs in subprocesses
here, never in the test process."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from bench_process import serving

from pytest_iterate.harness.cli import main

ROOT = Path(__file__).resolve().parents[2]
LOCUSTFILE = ROOT / "examples" / "locustfile.py"
LOCUST = Path(sys.executable).with_name("locust")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not LOCUST.exists(), reason="locust is not installed (pip install 'pytest-iterate[locust]')"
    ),
]


@pytest.fixture(scope="module")
def host() -> Iterator[str]:
    """``iterate-bench serve-mock --profile fast`` in its own process; Locust's ``--host`` for it
    (no path: the user adds ``/v1``)."""
    with serving("serve-mock", "--profile", "fast", "--port", "0") as url:
        yield url.removesuffix("/v1")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _locust(*args: str, cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [str(LOCUST), "-f", str(LOCUSTFILE), *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _stats(prefix: Path) -> dict[tuple[str, str], int]:
    """Request counts by (type, name) from Locust's final statistics (``--json-file``: written at
    shutdown; the ``--csv`` files are rewritten once a second and miss a short run's last second)."""
    entries = json.loads(Path(f"{prefix}.json").read_text())
    return {(e["method"], e["name"]): int(e["num_requests"]) for e in entries}


def test_a_master_and_two_workers_write_one_report_that_compare_reads(
    host: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    port = str(_free_port())
    master = _locust(
        "--headless", "--master", "--expect-workers", "2", "--master-bind-host", "127.0.0.1",
        "--master-bind-port", port, "-u", "4", "-r", "4", "-t", "2s", "--host", host,
        "--iterate-report-dir", str(tmp_path / "reports"), "--json-file", str(tmp_path / "run"),
        "--only-summary",
        cwd=tmp_path,
    )  # fmt: skip
    workers = [
        _locust("--worker", "--master-host", "127.0.0.1", "--master-port", port, cwd=tmp_path) for _ in "12"
    ]
    try:
        out, _ = master.communicate(timeout=120)
        for worker in workers:
            worker.communicate(timeout=60)
    finally:
        for proc in (master, *workers):
            proc.kill()
    assert master.returncode == 0, out[-4000:]
    assert all(w.returncode == 0 for w in workers)
    report = json.loads((tmp_path / "reports" / "iterate-report.json").read_text())
    assert report["complete"] is True, report["incomplete_reason"]
    assert report["run"]["tool"] == "locust" and report["run"]["workers"] == 2 and report["run"]["users"] == 4
    assert report["run"]["mode"] == "pipeline" and report["run"]["workload_kind"] == "design"
    (scenario,) = report["scenarios"]
    assert scenario["name"] == "locust" and scenario["requests"] > 50 and scenario["errors"] == 0
    assert (
        scenario["latency_s"]["count"] == scenario["requests"]
        and len(scenario["sample_keys"]) == scenario["requests"]
    )
    shares = scenario["workers"]
    assert [w["worker"] for w in shares] == [1, 2] and all(w["requests"] > 0 for w in shares)
    assert sum(w["requests"] for w in shares) == scenario["requests"]
    assert {"llm_call", "token_guard", "prompt_build"} <= set(scenario["stages"])
    assert {p.name for p in (tmp_path / "reports").iterdir()} == {
        "iterate-report.json", "iterate-report.md", "iterate-report.html", "benchmark.json", "metrics.prom",
    }  # fmt: skip
    # Locust's statistics: one entry per scenario, one per stage; every request of the report in them
    # (Locust also counts what its users finished between the master's stop and the workers' quit)
    stats = _stats(tmp_path / "run")
    assert stats[("pipeline", "locust")] >= scenario["requests"]
    assert stats[("stage", "llm_call")] == stats[("pipeline", "locust")]
    # the gates read it like any other run
    assert main(["compare", str(tmp_path / "reports"), str(tmp_path / "reports")]) == 0
    assert "RESULT: pass" in capsys.readouterr().out


def test_locust_alone_sends_raw_streamed_requests_and_reports_ttft(host: str, tmp_path: Path) -> None:
    proc = _locust(
        "--headless", "-u", "3", "-r", "3", "-t", "2s", "--host", host, "--iterate-raw", "--iterate-stream",
        "--iterate-workload", str(ROOT / "fixtures" / "workloads" / "chat.jsonl"),
        "--iterate-scenario", "chat",
        "--iterate-formats", "json,md", "--iterate-report-dir", str(tmp_path),
        "--json-file", str(tmp_path / "run"), "--only-summary",
        cwd=tmp_path,
    )  # fmt: skip
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out[-4000:]
    assert {p.name for p in tmp_path.glob("iterate-report.*")} == {"iterate-report.json", "iterate-report.md"}
    report = json.loads((tmp_path / "iterate-report.json").read_text())
    assert report["run"]["locust_mode"] == "local" and report["run"]["mode"] == "raw"
    (scenario,) = report["scenarios"]
    assert scenario["name"] == "chat" and scenario["requests"] > 20 and scenario["errors"] == 0
    assert scenario["ttft_s"]["count"] == scenario["requests"] and scenario["workers"] == []
    assert scenario["ttft_s"]["p50"] < scenario["latency_s"]["p50"]
    stats = _stats(tmp_path / "run")
    assert stats[("TTFT", "chat")] == stats[("raw", "chat")] >= scenario["requests"]


def test_a_bad_option_stops_locust_before_it_starts_naming_it(tmp_path: Path) -> None:
    done = subprocess.run(
        [str(LOCUST), "-f", str(LOCUSTFILE), "--headless", "-t", "1s", "--iterate-formats", "json,pdf"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "--iterate-formats 'json,pdf': unknown format(s) ['pdf']" in done.stdout + done.stderr


def test_neither_the_plugin_nor_iterate_bench_imports_locust() -> None:
    code = (
        "import sys, pytest_iterate.plugin.hooks, pytest_iterate.harness.cli\n"
        "loaded = [m for m in ('locust', 'gevent', 'pytest_iterate.integrations') if m in sys.modules]\n"
        "print(','.join(loaded))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""

"""Report writers: every format is written, read back by its own ecosystem's tools."""

from __future__ import annotations

import json
import random
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from pytest_iterate.harness.reports import REPORT_SCHEMA, write_reports
from pytest_iterate.harness.reports.benchmark_json import benchmark_stats
from pytest_iterate.harness.reports.json_report import load
from pytest_iterate.harness.samples import RequestSample
from pytest_iterate.harness.stats import summarize
from pytest_iterate.harness.summary import CriterionResult, Report, ReportError


def _samples(seed: int, base: float, n: int = 200) -> list[RequestSample]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        t = i * 0.01
        lat = base + rng.random() * base * 0.2
        out.append(
            RequestSample(
                scheduled_s=t,
                start_s=t,
                end_s=t + lat,
                first_token_s=t + lat / 3,
                completion_tokens=8,
                stages={"llm_call": lat * 0.8, "post_process": lat * 0.1},
            )
        )
    return out


@pytest.fixture
def report_and_samples() -> tuple[Report, dict[str, list[RequestSample]]]:
    samples = {"closed:1": _samples(1, 0.05), "closed:5": _samples(2, 0.08), "rate:50": _samples(3, 0.06)}
    scenarios = [summarize(name, ss, 2.0) for name, ss in samples.items()]
    criteria = [
        CriterionResult(id="latency.e2e_mean", threshold=3.0, unit="s", observed=0.05, passed=True),
        CriterionResult(id="cache.hit_rate_repeat", threshold=0.3, unit="ratio", observed=0.1, passed=False),
    ]
    return Report.build({"target": "mock"}, criteria, scenarios), samples


def test_report_json_round_trip(tmp_path: Path, report_and_samples: tuple[Report, dict]) -> None:
    report, _ = report_and_samples
    data = report.to_json()
    assert data["schema"] == REPORT_SCHEMA and "datetime" in data["run"]
    assert data["criteria"][0]["id"] == "latency.e2e_mean" and data["criteria"][1]["passed"] is False
    (path,) = write_reports(report, tmp_path, formats=("json",))
    assert load(path) == report
    assert load(tmp_path) == report  # a folder holding one


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ("{}", "schema is None"),
        ('{"schema": "pytest-iterate/report/v1", "scenarios": {}}', "'scenarios' should be a list"),
        ('{"schema": "pytest-iterate/report/v1", "scenarios": [{"requests": 3}]}', "name should be a string"),
        (
            '{"schema": "pytest-iterate/report/v1", "scenarios": [{"name": "s", "requests": -1}]}',
            "requests should be a whole number",
        ),
        (
            '{"schema": "pytest-iterate/report/v1", "scenarios": [{"name": "s", "requests": 1, '
            '"latency_s": {"mean": "fast"}}]}',
            "latency_s.mean should be a number",
        ),
        ("import os\n", "not JSON"),
    ],
)
def test_a_document_that_is_not_a_report_is_refused_naming_the_problem(
    tmp_path: Path, doc: str, message: str
) -> None:
    path = tmp_path / "iterate-report.json"
    path.write_text(doc.replace("\\n", "\n"))
    with pytest.raises(ReportError, match=message) as info:
        load(path)
    assert str(path) in str(info.value)


def test_write_reports_writes_every_format(tmp_path: Path, report_and_samples: tuple[Report, dict]) -> None:
    report, samples = report_and_samples
    paths = write_reports(report, tmp_path / "out", samples=samples)
    assert sorted(p.name for p in paths) == sorted(
        ["iterate-report.json", "iterate-report.md", "iterate-report.html", "benchmark.json", "metrics.prom"]
    )
    data = json.loads((tmp_path / "out" / "iterate-report.json").read_text())
    assert data["schema"] == REPORT_SCHEMA and [s["name"] for s in data["scenarios"]] == list(samples)
    assert len(data["scenarios"][0]["samples_s"]) == 200
    md = (tmp_path / "out" / "iterate-report.md").read_text()
    assert "`latency.e2e_mean`" in md and "| closed:5 |" in md and "## Stages" in md
    with pytest.raises(ValueError, match="pdf"):
        write_reports(report, tmp_path, formats=("pdf",))


def test_html_is_self_contained_with_inline_plots(
    tmp_path: Path, report_and_samples: tuple[Report, dict]
) -> None:
    report, samples = report_and_samples
    html = write_reports(report, tmp_path, formats=("html",), samples=samples)[0].read_text()
    assert "http://" not in html and "https://" not in html and "//cdn" not in html
    assert not re.search(r"<(script|link|img)[^>]+(src|href)=", html)
    for title in ("Latency distribution", "Latency over time", "Per-stage breakdown", "Throughput vs p95"):
        assert f'aria-label="{title}' in html, title
    assert html.count("<svg") == 4 and html.count("<circle") >= 600  # every request plotted
    # Without raw samples the capped timeline in the report still draws the plots.
    html2 = write_reports(report, tmp_path / "b", formats=("html",))[0].read_text()
    assert html2.count("<svg") == 4


def test_metrics_prom_parses_back(tmp_path: Path, report_and_samples: tuple[Report, dict]) -> None:
    report, _ = report_and_samples
    text = write_reports(report, tmp_path, formats=("prom",))[0].read_text()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    lat = {
        (s.labels["scenario"], s.labels["stat"]): s.value
        for s in families["iterate_bench_latency_seconds"].samples
    }
    assert lat[("closed:5", "p95")] == pytest.approx(report.scenarios[1].latency_s.p95)
    passed = {s.labels["id"]: s.value for s in families["iterate_criterion_passed"].samples}
    assert passed == {"latency.e2e_mean": 1.0, "cache.hit_rate_repeat": 0.0}
    assert {s.labels["stage"] for s in families["iterate_bench_stage_seconds"].samples} == {
        "llm_call",
        "post_process",
    }


def test_benchmark_stats_match_pytest_benchmark() -> None:
    from pytest_benchmark.stats import Stats

    rng = random.Random(5)
    xs = [rng.lognormvariate(-3, 0.4) for _ in range(301)]
    ours = benchmark_stats(xs)
    theirs = Stats()
    for x in xs:
        theirs.update(x)
    for key in ("min", "max", "mean", "stddev", "median", "rounds", "ops", "total"):
        assert ours[key] == pytest.approx(getattr(theirs, key)), key


def test_benchmark_json_is_read_by_pytest_benchmark_compare(
    tmp_path: Path, report_and_samples: tuple[Report, dict]
) -> None:
    report, _ = report_and_samples
    path = write_reports(report, tmp_path, formats=("benchmark",))[0]
    doc = json.loads(path.read_text())
    assert {"machine_info", "commit_info", "benchmarks", "datetime", "version"} <= set(doc)
    exe = shutil.which("pytest-benchmark", path=str(Path(sys.executable).parent))
    cmd = [exe] if exe else [sys.executable, "-m", "pytest_benchmark.cli"]
    proc = subprocess.run([*cmd, "compare", str(path)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    for name in ("closed:1", "closed:5", "rate:50"):
        assert name in proc.stdout
    assert "Traceback" not in proc.stderr


def test_push_sends_the_gauges_to_a_pushgateway(report_and_samples: tuple[Report, dict]) -> None:
    import http.server
    import threading

    from pytest_iterate.harness.reports.prom_report import push

    received: list[tuple[str, str, bytes]] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_PUT(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            received.append((self.command, self.path, body))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        push(report_and_samples[0], f"127.0.0.1:{server.server_address[1]}", job="ci")
    finally:
        server.shutdown()
        server.server_close()
    ((method, path, body),) = received
    assert method == "PUT" and path == "/metrics/job/ci"
    assert b"iterate_bench_latency_seconds" in body


def test_criteria_notes_and_skips_reach_markdown_and_html(tmp_path: Path) -> None:
    criteria = [
        CriterionResult(
            id="latency.e2e_mean",
            threshold=3.0,
            unit="s",
            observed=None,
            passed=False,
            note="endpoint http://x/v1 is unreachable\n(ConnectError | refused)",
        ),
        CriterionResult(
            id="errors.rate_with_retries",
            threshold=0.5,
            unit="%",
            observed=None,
            passed=None,
            note="needs fault injection <mock only>",
        ),
        CriterionResult(
            id="cache.hit_rate_repeat", threshold=30, unit="%", observed=99, passed=True, note="x" * 400
        ),
    ]
    write_reports(Report.build({"target": "x"}, criteria, []), tmp_path, formats=("md", "html"))
    md = (tmp_path / "iterate-report.md").read_text()
    rows = [ln for ln in md.splitlines() if ln.startswith("| ") and "`" in ln]
    assert len(rows) == 3  # each note stays inside its one row
    assert rows[0].startswith("| ❌ |") and "unreachable (ConnectError \\| refused) |" in rows[0]
    assert rows[1].startswith("| ⏭️ |") and "needs fault injection" in rows[1]
    assert rows[2].endswith("… |") and len(rows[2]) < 400
    html = (tmp_path / "iterate-report.html").read_text()
    assert "<td class=''>skip</td>" in html and html.count(">FAIL<") == 1
    assert "needs fault injection &lt;mock only&gt;" in html


def test_throughput_plot_takes_only_the_sweep_when_scenarios_mark_one(tmp_path: Path) -> None:
    scenarios = [
        summarize("concurrency_5", _samples(1, 0.05), 2.0).replace(sweep=True),
        summarize("standard", _samples(2, 0.08), 2.0).replace(sweep=True),
        summarize("repeat", _samples(3, 0.001), 0.1),  # cache hits: not a point of the load sweep
    ]
    write_reports(Report.build({"target": "x"}, [], scenarios), tmp_path, formats=("html",))
    html = (tmp_path / "iterate-report.html").read_text()
    start = html.index("Throughput vs p95")
    plot = html[start : html.index("</svg>", start)]
    assert "concurrency_5" in plot and "standard" in plot and "repeat" not in plot
    # unmarked (an iterate-bench run): every scenario is a point
    unmarked = [s.replace(sweep=False) for s in scenarios]
    write_reports(Report.build({"target": "x"}, [], unmarked), tmp_path, formats=("html",))
    html = (tmp_path / "iterate-report.html").read_text()
    start = html.index("Throughput vs p95")
    assert "repeat" in html[start : html.index("</svg>", start)]

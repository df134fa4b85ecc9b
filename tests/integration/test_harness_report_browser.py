"""The HTML report as a person sees it: laid out by headless Chromium.

A copy of a real report gets a script that measures the rendered page (every chart's
legend below its plot area, no two tick labels of an axis overlapping, tick text at
least 11 px, charts as wide as the page allows and no wider) and writes the result into
the DOM, which ``--dump-dom`` prints. Skipped, with the reason, where Chromium is not
installed (``apt-get install chromium``).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from pytest_iterate.harness.cli import main

_BROWSERS = ("chromium", "chromium-browser", "google-chrome")

_PROBE = """<script>
const out = {charts: []};
for (const svg of document.querySelectorAll('svg.plot')) {
  const box = svg.getBoundingClientRect();
  const frame = svg.querySelector('rect.frame').getBoundingClientRect();
  const chart = {title: svg.getAttribute('aria-label'), width: box.width, legendBelow: true,
                 overlaps: 0, minTick: 1e9, minFont: 1e9, ticks: 0};
  for (const legend of svg.querySelectorAll('g.legend')) {
    const r = legend.getBoundingClientRect();
    if (r.height > 0 && r.top < frame.bottom) chart.legendBelow = false;
  }
  for (const axis of svg.querySelectorAll('g.axis')) {
    const ticks = [...axis.querySelectorAll('text.tick')];
    const scale = box.width / svg.viewBox.baseVal.width;  // user units to CSS pixels
    for (const t of ticks)
      chart.minFont = Math.min(chart.minFont, parseFloat(t.getAttribute('font-size')) * scale);
    const rects = ticks.map(t => t.getBoundingClientRect());
    chart.ticks += rects.length;
    for (const r of rects) chart.minTick = Math.min(chart.minTick, r.height);
    for (let i = 0; i < rects.length; i++)
      for (let j = i + 1; j < rects.length; j++) {
        const a = rects[i], b = rects[j];
        const apart = a.right - 0.5 <= b.left || b.right - 0.5 <= a.left
          || a.bottom - 0.5 <= b.top || b.bottom - 0.5 <= a.top;
        if (!apart) chart.overlaps++;
      }
  }
  out.charts.push(chart);
}
out.viewport = window.innerWidth;
out.scrollWidth = document.documentElement.scrollWidth;
const pre = document.createElement('pre'); pre.id = 'layout'; pre.textContent = JSON.stringify(out);
document.body.appendChild(pre);
</script>"""


def _browser() -> str:
    for name in _BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    pytest.skip("Chromium is not installed (apt-get install chromium): the rendered-layout check needs it")


def _layout(browser: str, page: Path, width: int, profile: Path) -> dict[str, Any]:
    cmd = [
        browser,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--no-first-run",
        f"--user-data-dir={profile}",
        f"--window-size={width},1000",
        "--virtual-time-budget=5000",
        "--dump-dom",
        page.as_uri(),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    found = re.search(r'<pre id="layout">(.*?)</pre>', done.stdout, re.S)
    assert found, f"no layout from {browser} (exit {done.returncode}): {done.stderr[-2000:]}"
    data: dict[str, Any] = json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&"))
    return data


@pytest.mark.slow
def test_the_report_renders_readable_charts(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    browser = _browser()
    code = main(
        [
            "run",
            "--target",
            "mock",
            "--profile",
            "fast",
            "--concurrency",
            "1,4",
            "--requests",
            "60",
            "--cache",
            "--cache-dir",
            str(tmp_path / "cache"),
            "--quiet",
            "--report-dir",
            str(tmp_path / "r"),
            "--formats",
            "html",
        ]
    )
    assert code == 0, capsys.readouterr().err
    html = (tmp_path / "r" / "iterate-report.html").read_text()
    page = tmp_path / "probe.html"
    page.write_text(html.replace("</body>", _PROBE + "</body>"))
    wide = _layout(browser, page, 1280, tmp_path / "profile-wide")
    narrow = _layout(browser, page, 820, tmp_path / "profile-narrow")
    assert len(wide["charts"]) >= 3
    for chart in wide["charts"]:
        assert chart["legendBelow"], chart
        assert chart["overlaps"] == 0, chart
        assert chart["ticks"] >= 4 and chart["minFont"] >= 11 and chart["minTick"] >= 11, chart
        assert chart["width"] > 900, chart  # fills the page, not a fixed 640 px
    for chart in narrow["charts"]:
        assert chart["width"] <= narrow["viewport"], chart  # shrinks with the window
        assert chart["overlaps"] == 0 and chart["minFont"] >= 10, chart
    assert narrow["scrollWidth"] <= narrow["viewport"] + 1  # no sideways scrolling
    assert max(c["width"] for c in narrow["charts"]) < min(c["width"] for c in wide["charts"])

"""Other tools against ``iterate-bench serve-mock``, with their default settings: the official
openai SDK, and a third-party load harness (locust, headless) driving it as its users do."""

from __future__ import annotations

import csv
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from bench_process import serving

openai = pytest.importorskip("openai")


@pytest.fixture(scope="module")
def serve_mock() -> Iterator[str]:
    """``iterate-bench serve-mock`` in its own process; yields the base URL it prints first."""
    with serving("serve-mock", "--profile", "fast", "--port", "0") as url:
        yield url


def test_the_openai_sdk_with_its_defaults(serve_mock: str) -> None:
    client = openai.OpenAI(base_url=serve_mock, api_key="sk-not-a-real-key")  # SDK defaults otherwise
    models = [m.id for m in client.models.list()]
    assert models
    reply = client.chat.completions.create(
        model=models[0], messages=[{"role": "user", "content": "Write a stack in Python."}], max_tokens=32
    )
    assert reply.choices[0].message.content and reply.usage is not None and reply.usage.completion_tokens > 0
    stream = client.chat.completions.create(
        model=models[0], messages=[{"role": "user", "content": "Say hi."}], max_tokens=8, stream=True
    )
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    assert text
    legacy = client.completions.create(model=models[0], prompt="def add(a, b):", max_tokens=8)
    assert legacy.choices[0].text


_LOCUSTFILE = """
from locust import HttpUser, constant, task


class OpenAIUser(HttpUser):
    wait_time = constant(0.05)

    def on_start(self):
        self.client.get("/v1/models")  # what load tools probe before they start

    @task
    def chat(self):
        body = {"model": "gpt-4o-mini", "max_tokens": 16,
                "messages": [{"role": "user", "content": "Write a queue in Python."}]}
        with self.client.post("/v1/chat/completions", json=body, catch_response=True) as resp:
            if not resp.json()["choices"][0]["message"]["content"]:
                resp.failure("empty answer")
"""


@pytest.mark.slow
def test_locust_headless_drives_serve_mock(serve_mock: str, tmp_path: Path) -> None:
    locust = shutil.which("locust") or str(Path(sys.executable).with_name("locust"))
    if not Path(locust).exists():
        pytest.skip("locust is not installed (pip install -e '.[dev]' installs it)")
    (tmp_path / "locustfile.py").write_text(textwrap.dedent(_LOCUSTFILE))
    host = serve_mock.removesuffix("/v1")
    done = subprocess.run(
        [
            locust,
            "-f",
            str(tmp_path / "locustfile.py"),
            "--headless",
            "--users",
            "5",
            "--spawn-rate",
            "5",
            "--run-time",
            "3s",
            "--host",
            host,
            "--only-summary",
            "--csv",
            str(tmp_path / "run"),
            "--exit-code-on-error",
            "1",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    rows = {row["Name"]: row for row in csv.DictReader((tmp_path / "run_stats.csv").open())}
    chat, models = rows["/v1/chat/completions"], rows["/v1/models"]
    assert int(chat["Request Count"]) >= 20 and int(chat["Failure Count"]) == 0
    assert int(models["Request Count"]) == 5 and int(models["Failure Count"]) == 0  # one probe per user


def _has_health(url: str) -> bool:
    return httpx.get(url.removesuffix("/v1") + "/health", timeout=10).status_code != 404


def test_the_health_probe_harnesses_send_before_a_run(serve_mock: str) -> None:
    if not _has_health(serve_mock):
        pytest.skip("this mock has no GET /health yet: it comes with the mock's probe routes")
    for path in ("/health", "/v1/health"):
        resp = httpx.get(serve_mock.removesuffix("/v1") + path, timeout=10)
        assert resp.status_code == 200 and resp.json()["status"] == "ok", (path, resp.text)

"""``iterate-bench run`` as a load-testing user runs it: real servers on 127.0.0.1, real reports."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pytest_iterate import __version__
from pytest_iterate.doubles.loopback import LoopbackServer
from pytest_iterate.harness.cli import main


@pytest.fixture
def loopback() -> Iterator[LoopbackServer]:
    """A neutral server (no latency) on its own thread and loop, recording the last request."""
    server = LoopbackServer(stream_tokens=5)
    loop = asyncio.new_event_loop()
    started = threading.Event()

    def serve() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(server.start())
        started.set()
        loop.run_forever()
        loop.run_until_complete(server.stop())

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    assert started.wait(10)
    try:
        yield server
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def _report(folder: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((folder / "iterate-report.json").read_text())
    return data


def _run(tmp_path: Path, *argv: str) -> tuple[int, dict[str, Any]]:
    out = tmp_path / "r"
    code = main(["run", *argv, "--quiet", "--report-dir", str(out), "--formats", "json"])
    return code, _report(out) if (out / "iterate-report.json").exists() else {}


def test_a_closed_loop_sweep_on_the_mock_measures_the_endpoint_not_a_cache(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    code, report = _run(
        tmp_path, "--target", "mock", "--profile", "fast", "--concurrency", "1,5,10", "--requests", "50"
    )
    out = capsys.readouterr().out
    assert code == 0, out
    assert [s["cache"]["hit_rate"] for s in report["scenarios"]] == [0.0, 0.0, 0.0]
    for level in (1, 5, 10):
        assert f"closed:{level}: 50 requests, 0 errors" in out and "cache hits 0 %" in out
    assert [s["max_inflight"] for s in report["scenarios"]] == [1, 5, 10]
    assert [s["concurrency"] for s in report["scenarios"]] == [1, 5, 10]
    assert report["run"]["cache_enabled"] is False and "cache_dir" not in report["run"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r"]  # no .iterate_cache here


def test_cache_is_opt_in_and_lives_in_the_user_cache_dir(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("ITERATE_CACHE_DIR", raising=False)
    code, report = _run(
        tmp_path,
        "--target",
        "mock",
        "--profile",
        "fast",
        "--concurrency",
        "1,4",
        "--requests",
        "40",
        "--cache",
    )
    assert code == 0, capsys.readouterr().err
    hits = [s["cache"]["hit_rate"] for s in report["scenarios"]]
    assert hits[0] > 0 and hits[1] > 0.9  # duplicates in step 1, everything from the cache in step 2
    folder = tmp_path / "xdg" / "pytest-iterate" / "responses"
    assert report["run"]["cache_dir"] == str(folder) and any(folder.iterdir())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r", "xdg"]
    code, report = _run(
        tmp_path,
        "--target",
        "mock",
        "--profile",
        "fast",
        "--requests",
        "5",
        "--cache",
        "--cache-dir",
        str(tmp_path / "mine"),
    )
    assert code == 0 and report["run"]["cache_dir"] == str(tmp_path / "mine") and (tmp_path / "mine").is_dir()


def test_concurrency_64_against_a_200_ms_server_is_not_capped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, report = _run(
        tmp_path,
        "--target",
        "loopback",
        "--mock-latency",
        "0.2",
        "--concurrency",
        "64",
        "--requests",
        "192",
        "--warmup",
        "64",
    )
    out = capsys.readouterr().out
    assert code == 0, out
    (s,) = report["scenarios"]
    assert s["max_inflight"] == 64 and report["run"]["max_concurrent_requests"] == 64
    assert report["run"]["max_connections"] == 64 and s["errors"] == 0
    # a cap of 10 in flight would give 50 req/s; the ideal is 320 (a loaded machine stays well above 100)
    assert s["throughput_rps"] > 100, out


def test_an_open_loop_gets_no_busy_answers_from_its_own_client(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, report = _run(
        tmp_path, "--target", "loopback", "--mock-latency", "0.1", "--rate", "200", "--duration", "1"
    )
    out = capsys.readouterr().out
    assert code == 0, out
    (s,) = report["scenarios"]
    assert s["errors"] == 0 and s["errors_by_kind"] == {}, out
    assert s["max_inflight"] > 10  # 200 req/s x 0.1 s: about 20 at once, over the old default limit
    assert report["run"]["max_concurrent_requests"] >= 200 * 10  # rate x the longest a request lives


@pytest.mark.parametrize("raw", [False, True])
def test_model_headers_max_tokens_and_key_reach_the_endpoint(
    raw: bool,
    tmp_path: Path,
    loopback: LoopbackServer,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("BENCH_KEY", "sk-bench-secret")
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"prompt": "hello"}\n')
    code, report = _run(
        tmp_path,
        "--target",
        loopback.base_url,
        "--workload",
        str(prompts),
        "--model",
        "smollm2",
        "--api-key-env",
        "BENCH_KEY",
        "--header",
        "X-Team: search",
        "--header",
        "X-Run:7",
        "--max-tokens",
        "9",
        "--requests",
        "3",
        *(["--raw"] if raw else []),
    )
    assert code == 0, capsys.readouterr().err
    body = json.loads(loopback.last_body)
    assert body["model"] == "smollm2" and body["max_tokens"] == 9
    assert body["messages"] == [{"role": "user", "content": "hello"}]
    headers = loopback.last_headers
    assert headers["X-Team"] == "search" and headers["X-Run"] == "7"
    assert headers["Authorization"] == "Bearer sk-bench-secret"
    text = json.dumps(report)
    assert "sk-bench-secret" not in text and "search" not in text
    assert report["run"]["headers"] == "X-Run, X-Team" and report["run"]["model"] == "smollm2"
    assert report["run"]["mode"] == ("raw" if raw else "pipeline")


def test_a_named_key_variable_must_be_set(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NO_SUCH_KEY", raising=False)
    code, _ = _run(tmp_path, "--target", "loopback", "--api-key-env", "NO_SUCH_KEY", "--requests", "1")
    assert code == 2 and "'NO_SUCH_KEY' is not set" in capsys.readouterr().err


@pytest.mark.parametrize("raw", [False, True])
def test_stream_measures_time_to_first_token(
    raw: bool, tmp_path: Path, loopback: LoopbackServer, capsys: pytest.CaptureFixture[str]
) -> None:
    code, report = _run(
        tmp_path,
        "--target",
        loopback.base_url,
        "--synthetic",
        "prompt_tokens=64,output_tokens=5,count=4",
        "--stream",
        "--requests",
        "4",
        *(["--raw"] if raw else []),
    )
    assert code == 0, capsys.readouterr().err
    assert json.loads(loopback.last_body)["stream"] is True
    assert "TTFT p50 " in capsys.readouterr().out
    (s,) = report["scenarios"]
    assert s["ttft_s"]["count"] == 4 and s["tokens"]["completion"] == 4 * 5
    assert report["run"]["workload_kind"] == "synthetic" and report["run"]["stream"] is True


def test_chat_and_completions_workloads_go_to_their_paths(
    tmp_path: Path, loopback: LoopbackServer, capsys: pytest.CaptureFixture[str]
) -> None:
    chat = tmp_path / "chat.jsonl"
    chat.write_text(
        json.dumps(
            {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]}
        )
        + "\n"
    )
    code, report = _run(tmp_path, "--target", loopback.base_url, "--workload", str(chat), "--requests", "2")
    assert code == 0 and report["run"]["workload_kind"] == "chat"
    assert json.loads(loopback.last_body)["messages"][0] == {"role": "system", "content": "Be brief."}
    code, report = _run(
        tmp_path,
        "--target",
        loopback.base_url,
        "--synthetic",
        "prompt_tokens=16,output_tokens=2,count=2",
        "--api",
        "completions",
        "--requests",
        "2",
        "--raw",
    )
    assert code == 0, capsys.readouterr().err
    body = json.loads(loopback.last_body)
    assert isinstance(body["prompt"], str) and "messages" not in body


def test_help_names_the_flags_and_the_environment(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["run", "--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    for name in (
        "ITERATE_MODEL",
        "ITERATE_API_KEY_ENV",
        "OPENAI_API_KEY",
        "ITERATE_CACHE_DIR",
        "CI",
        "--model",
        "--api-key-env",
        "--header",
        "--max-tokens",
        "--stream",
        "--no-stream",
        "--synthetic",
        "--workload",
        "--cache",
        "--cache-dir",
        "max_inflight",
    ):
        assert name in text, name


def test_version_prints_the_package_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--version"])
    assert __version__ in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["run", "--synthetic", "prompt_tokens=8"], "lacks output_tokens"),
        (["run", "--header", "no-colon"], "NAME:VALUE"),
        (["run", "--api-key-env", "sk-abc123"], "is not an environment variable name"),
        (["run", "--max-tokens", "0"], "'0'"),
        (["run", "--api", "embeddings"], "invalid choice: 'embeddings'"),
        (
            ["run", "--workload", "a.jsonl", "--synthetic", "prompt_tokens=8,output_tokens=1"],
            "not allowed with",
        ),
    ],
)
def test_bad_new_flags_name_the_value(
    argv: list[str], needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    assert needle in capsys.readouterr().err


def test_a_bad_workload_file_exits_2_naming_the_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "a"}\n{"prompt": "b", "temperature": 1}\n')
    code, _ = _run(tmp_path, "--target", "loopback", "--workload", str(bad))
    err = capsys.readouterr().err
    assert code == 2 and f"{bad}:2: unknown field(s) 'temperature'" in err


@pytest.mark.parametrize("raw", [False, True])
def test_design_workloads_take_max_tokens_and_stream_too(
    raw: bool, tmp_path: Path, loopback: LoopbackServer, capsys: pytest.CaptureFixture[str]
) -> None:
    designs = str(Path(__file__).parents[2] / "fixtures" / "workloads" / "designs.jsonl")
    code, report = _run(
        tmp_path,
        "--target",
        loopback.base_url,
        "--workload",
        designs,
        "--max-tokens",
        "9",
        "--stream",
        "--requests",
        "3",
        *(["--raw"] if raw else []),
    )
    assert code == 0, capsys.readouterr().err
    body = json.loads(loopback.last_body)
    assert body["max_tokens"] == 9 and body["stream"] is True
    assert body["messages"][0]["role"] == "system" and "Task: " in body["messages"][1]["content"]
    (s,) = report["scenarios"]
    assert report["run"]["workload_kind"] == "design" and s["ttft_s"]["count"] == 3


def test_raw_mode_without_a_workload_sends_a_one_token_ping(
    tmp_path: Path, loopback: LoopbackServer, capsys: pytest.CaptureFixture[str]
) -> None:
    code, report = _run(tmp_path, "--target", loopback.base_url, "--raw", "--requests", "2")
    assert code == 0, capsys.readouterr().err
    body = json.loads(loopback.last_body)
    assert body["messages"] == [{"role": "user", "content": "ping"}] and body["max_tokens"] == 1
    assert (
        report["run"]["workload"] == "ping (1 token)" and report["scenarios"][0]["tokens"]["completion"] == 2
    )


def test_the_open_files_limit_is_named_never_a_silent_cap(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("pytest_iterate.harness.cli.raise_open_files_limit", lambda: 200)
    code, _ = _run(tmp_path, "--target", "loopback", "--concurrency", "500", "--requests", "5")
    err = capsys.readouterr().err
    assert code == 2 and "--concurrency 500 needs 500 connections" in err and "ulimit -n" in err
    code, report = _run(
        tmp_path, "--target", "loopback", "--mock-latency", "0", "--rate", "50", "--requests", "5"
    )
    out = capsys.readouterr().out
    assert code == 0 and "note: connections capped at 136 by the open-files limit (ulimit -n 200)" in out
    assert report["run"]["max_connections"] == 136 and "ulimit -n 200" in report["run"]["limits_note"]

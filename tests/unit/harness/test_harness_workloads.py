"""Workload kinds iterate-bench reads: prompt, chat and design JSONL, synthetic prompts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pytest_iterate.client.errors import WorkloadError
from pytest_iterate.harness.workloads import (
    SyntheticSpec,
    default_workload,
    load_workload_file,
    ping_workload,
    synthetic_workload,
)
from pytest_iterate.pipeline.workload import standard_workload_path
from pytest_iterate.tokens.counter import TokenCounter


def _jsonl(tmp_path: Path, *records: object, name: str = "w.jsonl") -> Path:
    path = tmp_path / name
    lines = ["# a comment", ""] + [r if isinstance(r, str) else json.dumps(r) for r in records]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_prompt_jsonl_becomes_chat_or_completions_requests(tmp_path: Path) -> None:
    path = _jsonl(tmp_path, {"prompt": "Explain TCP", "max_tokens": 32}, {"id": "b", "prompt": "Hi"})
    chat = load_workload_file(path)
    assert chat.kind == "prompt" and len(chat) == 2
    first = chat.requests[0]
    assert first.endpoint == "chat" and first.messages == ({"role": "user", "content": "Explain TCP"},)
    assert first.max_tokens == 32 and chat.requests[1].max_tokens is None
    assert first.params == {"temperature": 0}  # cacheable under --cache, as the design pipeline's
    plain = load_workload_file(path, api="completions")
    assert plain.requests[0].endpoint == "completions" and plain.requests[0].prompt == "Explain TCP"
    assert plain.requests[0].path == "/completions"


def test_chat_jsonl_keeps_the_transcript(tmp_path: Path) -> None:
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "What is a mutex?"},
        {"role": "assistant", "content": "A lock."},
        {"role": "user", "content": "And a semaphore?"},
    ]
    w = load_workload_file(_jsonl(tmp_path, {"messages": messages, "max_tokens": 64}))
    assert w.kind == "chat" and [m["role"] for m in w.requests[0].messages] == [
        "system",
        "user",
        "assistant",
        "user",
    ]
    assert w.describe() == {
        "workload": str(tmp_path / "w.jsonl"),
        "workload_kind": "chat",
        "workload_items": 1,
    }


def test_design_jsonl_and_the_default_are_design_workloads(tmp_path: Path) -> None:
    w = load_workload_file(standard_workload_path())
    assert w.kind == "design" and len(w) == 100 == len(default_workload())
    capped = w.with_options(max_tokens=7, stream=True)
    assert {d.max_tokens for d in capped.designs} == {7}


@pytest.mark.parametrize(
    ("records", "needle"),
    [
        (['{"prompt": "a"'], ".jsonl:3: invalid JSON"),
        (
            [{"prompt": "a"}, {"messages": [{"role": "user", "content": "b"}]}],
            "a chat record in a prompt workload",
        ),
        (
            [{"prompt": "a", "max_token": 3}],
            "unknown field(s) 'max_token'; known fields: id, prompt, max_tokens",
        ),
        ([{"prompt": ""}], "field 'prompt' must be a non-empty string"),
        ([{"prompt": "a", "max_tokens": 0}], "field 'max_tokens' must be a whole number >= 1"),
        ([{"messages": []}], "field 'messages' must be a non-empty list"),
        ([{"messages": [{"role": "robot", "content": "x"}]}], "messages[0].role is 'robot'; accepted roles"),
        ([{"messages": [{"role": "user"}]}], "messages[0] must be an object with a string 'content'"),
        ([{"title": "no id"}], "missing required field 'id'"),
    ],
)
def test_bad_workload_lines_name_the_file_line_and_what_is_accepted(
    tmp_path: Path, records: list[object], needle: str
) -> None:
    path = _jsonl(tmp_path, *records)
    with pytest.raises(WorkloadError) as info:
        load_workload_file(path)
    assert needle in str(info.value) and str(path) in str(info.value)


def test_chat_records_cannot_go_to_completions_and_empty_files_are_refused(tmp_path: Path) -> None:
    chat = _jsonl(tmp_path, {"messages": [{"role": "user", "content": "x"}]})
    with pytest.raises(WorkloadError, match="cannot be sent to /v1/completions"):
        load_workload_file(chat, api="completions")
    with pytest.raises(WorkloadError, match="holds no requests"):
        load_workload_file(_jsonl(tmp_path, name="empty.jsonl"))
    with pytest.raises(WorkloadError, match="cannot read workload file"):
        load_workload_file(tmp_path / "missing.jsonl")


def test_synthetic_prompts_have_exactly_the_asked_token_lengths() -> None:
    counter = TokenCounter()
    w = synthetic_workload(SyntheticSpec.parse("prompt_tokens=512,output_tokens=128,count=20"), counter)
    assert w.kind == "synthetic" and len(w) == 20
    counts = {counter.count_text(r.messages[0]["content"]) for r in w.requests}
    assert counts == {512}
    assert {r.max_tokens for r in w.requests} == {128}
    texts = [r.messages[0]["content"] for r in w.requests]
    assert len({t.split(":")[0] for t in texts}) == 20  # distinct from the first token on
    again = synthetic_workload(SyntheticSpec.parse("prompt_tokens=512,output_tokens=128,count=20"), counter)
    assert [r.messages for r in again.requests] == [r.messages for r in w.requests]  # seeded
    other = synthetic_workload(SyntheticSpec.parse("prompt_tokens=512,output_tokens=128,count=20,seed=1"))
    assert [r.messages for r in other.requests] != [r.messages for r in w.requests]


def test_synthetic_spread_draws_lengths_within_the_band() -> None:
    counter = TokenCounter()
    spec = SyntheticSpec.parse("prompt_tokens=200,output_tokens=100,spread=0.25,output_spread=0,count=60")
    w = synthetic_workload(spec, counter, api="completions")
    lengths = [counter.count_text(str(r.prompt)) for r in w.requests]
    assert min(lengths) >= 150 and max(lengths) <= 250 and len(set(lengths)) > 10
    assert {r.max_tokens for r in w.requests} == {100} and {r.endpoint for r in w.requests} == {"completions"}


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("prompt_tokens=512", "lacks output_tokens"),
        ("prompt_tokens=512,output_tokens=x", "output_tokens='x' is not a whole number"),
        ("prompt_tokens=512,output_tokens=8,spread=1.5", "spread=1.5 is outside 0 <= S < 1"),
        ("prompt_tokens=512,output_tokens=8,temperature=1", "bad synthetic spec part 'temperature=1'"),
        ("prompt_tokens=2,output_tokens=8", "prompt_tokens=2 is outside 8..1000000"),
    ],
)
def test_bad_synthetic_specs_name_the_part(text: str, needle: str) -> None:
    with pytest.raises(ValueError) as info:
        SyntheticSpec.parse(text)
    assert needle in str(info.value)


def test_ping_is_one_token_and_takes_options() -> None:
    w = ping_workload().with_options(max_tokens=5, stream=True)
    (request,) = w.requests
    assert request.max_tokens == 5 and request.stream and request.messages[0]["content"] == "ping"


def test_the_tokenizer_reads_only_the_offline_package_data(tmp_path: Path) -> None:
    """tiktoken copies an encoding file into a cache folder (the temp dir) and reads it back
    from there on later loads; the offline encoding must come from the package alone."""
    env = {**os.environ, "TMPDIR": str(tmp_path / "tmp"), "TIKTOKEN_CACHE_DIR": str(tmp_path / "tk")}
    (tmp_path / "tmp").mkdir()
    code = (
        "import os; from pytest_iterate.tokens.counter import load_encoding; "
        "print(len(load_encoding().encode('hello world'))); print(os.environ['TIKTOKEN_CACHE_DIR'])"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["2", str(tmp_path / "tk")]  # counted; the user's variable put back
    assert not (tmp_path / "tk").exists() and list((tmp_path / "tmp").iterdir()) == []

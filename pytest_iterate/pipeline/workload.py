"""Workload files: JSON Lines of :class:`~pytest_iterate.pipeline.design.DesignRequest`.

Blank lines and lines starting with ``#`` are skipped. The whole file is validated
before anything is returned, so a caller never gets half a workload: the first bad
line raises :class:`~pytest_iterate.client.errors.WorkloadError` whose message
names the file, the line number and what is wrong (bad JSON, a missing field, a
duplicated id with different content, ...).

Exact duplicates (same id, same content) are allowed and kept: the standard workload
uses them on purpose to exercise the cache. Two lines with the same id but different
content are an error.
"""

from __future__ import annotations

import json
from pathlib import Path

from pytest_iterate._data import fixtures_dir
from pytest_iterate.client.errors import WorkloadError
from pytest_iterate.pipeline.design import DesignRequest

__all__ = ["load_workload", "long_context_workload_path", "standard_workload_path"]


def standard_workload_path() -> Path:
    """``fixtures/workloads/designs.jsonl``: 100 design requests, 30 of them exact duplicates."""

    return fixtures_dir() / "workloads" / "designs.jsonl"


def long_context_workload_path() -> Path:
    """``fixtures/workloads/long_context.jsonl``: requests too big for a 2,048-token window."""

    return fixtures_dir() / "workloads" / "long_context.jsonl"


def load_workload(path: str | Path) -> list[DesignRequest]:
    """Read and validate a workload file; all or nothing."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise WorkloadError(f"cannot read workload file {path}: {exc}") from exc
    requests: list[DesignRequest] = []
    seen: dict[str, tuple[int, DesignRequest]] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        try:
            data = json.loads(stripped)
        except json.JSONDecodeError as exc:
            raise WorkloadError(
                f"invalid JSON ({exc.msg} at column {exc.colno})", path=str(path), line=number
            ) from None
        try:
            request = DesignRequest.from_json(data)
        except ValueError as exc:
            raise WorkloadError(str(exc), path=str(path), line=number) from None
        previous = seen.get(request.id)
        if previous is not None and previous[1] != request:
            raise WorkloadError(
                f"id {request.id!r} was already used on line {previous[0]} with different content",
                path=str(path),
                line=number,
            )
        seen.setdefault(request.id, (number, request))
        requests.append(request)
    if not requests:
        raise WorkloadError(f"workload file {path} holds no requests")
    return requests

"""Where the shipped data (workloads, mock profiles, cassettes) lives.

``pytest_iterate/_fixtures`` is the repository's ``fixtures/`` folder: a symlink in a
source checkout (editable install), real files in a wheel.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["fixtures_dir"]


def fixtures_dir() -> Path:
    return Path(__file__).parent / "_fixtures"

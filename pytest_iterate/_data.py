"""Where the shipped data (workloads, mock profiles, cassettes) lives.

In a wheel the repository's ``fixtures/`` folder is packaged as
``pytest_iterate/_fixtures``; in a source checkout (editable install) it is the
repository's own ``fixtures/``.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["fixtures_dir"]


def fixtures_dir() -> Path:
    here = Path(__file__).resolve().parent
    packaged = here / "_fixtures"
    if packaged.is_dir():
        return packaged
    return here.parent / "fixtures"

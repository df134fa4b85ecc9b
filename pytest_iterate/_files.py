"""Files written whole or not at all: a temporary file in the same folder, then a rename.

A reader never sees half a report, a cassette or a baseline, whatever happens while it is
written (a full disk, Ctrl-C, a crash): the old file stays until the new one is complete.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

__all__ = ["write_atomic"]


def write_atomic(path: str | os.PathLike[str], text: str, *, mode: int | None = None) -> Path:
    """Write ``text`` (UTF-8, ``\\n`` line ends) to ``path`` atomically; return the path.

    The file keeps its permissions when it exists, else gets ``mode`` (default 0644: a
    report or a cassette is meant to be shared; ``mkstemp`` alone would make it 0600).
    On any error the temporary file is removed and the old file, if any, is untouched.
    """
    p = Path(path)
    try:
        keep = p.stat().st_mode & 0o777
    except FileNotFoundError:
        keep = 0o644 if mode is None else mode
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, keep)
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return p

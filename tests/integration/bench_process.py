"""``iterate-bench serve-*`` in a process of its own, for the tests that drive it from outside."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

BENCH = Path(sys.executable).with_name("iterate-bench")


@contextlib.contextmanager
def serving(*args: str) -> Iterator[str]:
    """Run ``iterate-bench ARGS`` (a ``serve-*`` command); yield the base URL it prints first."""
    proc = subprocess.Popen([str(BENCH), *args], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:") and url.endswith("/v1"), url
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)

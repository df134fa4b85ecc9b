"""The README's runnable example works as documented (it starts the loopback mock itself)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "pipeline_without_pytest.py"


def test_pipeline_without_pytest_example_runs() -> None:
    out = subprocess.run([sys.executable, str(EXAMPLE)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "20/20 ok" in out.stdout
    assert "d001: ok=True" in out.stdout
    assert "layers: first from the endpoint, again from memory" in out.stdout

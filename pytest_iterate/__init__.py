"""pytest-iterate: a pytest plugin and benchmarking harness for LLM pipelines."""

from __future__ import annotations

__version__ = "0.1.0"

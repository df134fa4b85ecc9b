"""pytest-iterate: a pytest plugin and benchmarking harness for LLM pipelines.

The public API is exported lazily: ``import pytest_iterate`` (which pytest does for the
plugin on every start) imports nothing else; ``pytest_iterate.Pipeline`` imports the
pipeline on first access.

>>> import pytest_iterate
>>> pytest_iterate.IterateConfig.__name__
'IterateConfig'
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# name -> module that defines it
_EXPORTS: dict[str, str] = {
    "IterateConfig": "pytest_iterate.client.config",
    "IterateMetrics": "pytest_iterate.client.metrics",
    "LLMClient": "pytest_iterate.client.client",
    "LLMRequest": "pytest_iterate.client.types",
    "LLMResponse": "pytest_iterate.client.types",
    "Usage": "pytest_iterate.client.types",
    "GuardWarning": "pytest_iterate.client.types",
    "IterateError": "pytest_iterate.client.errors",
    "Busy": "pytest_iterate.client.errors",
    "ContextOverflow": "pytest_iterate.client.errors",
    "Pipeline": "pytest_iterate.pipeline.runner",
    "PipelineResult": "pytest_iterate.pipeline.runner",
    "DesignRequest": "pytest_iterate.pipeline.design",
    "load_workload": "pytest_iterate.pipeline.workload",
    "ResponseCache": "pytest_iterate.cache.tiered",
    "batch_llm_call": "pytest_iterate.batch.call",
    "batch_llm_call_results": "pytest_iterate.batch.call",
    "TokenCounter": "pytest_iterate.tokens.counter",
    "TokenGuard": "pytest_iterate.tokens.guard",
    "MockLLM": "pytest_iterate.doubles.mock.core",
    "MockServer": "pytest_iterate.doubles.mock.server",
}

__all__ = [
    "Busy",
    "ContextOverflow",
    "DesignRequest",
    "GuardWarning",
    "IterateConfig",
    "IterateError",
    "IterateMetrics",
    "LLMClient",
    "LLMRequest",
    "LLMResponse",
    "MockLLM",
    "MockServer",
    "Pipeline",
    "PipelineResult",
    "ResponseCache",
    "TokenCounter",
    "TokenGuard",
    "Usage",
    "__version__",
    "batch_llm_call",
    "batch_llm_call_results",
    "load_workload",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'pytest_iterate' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})


if TYPE_CHECKING:  # for type checkers and IDEs; never executed
    from pytest_iterate.batch.call import batch_llm_call, batch_llm_call_results
    from pytest_iterate.cache.tiered import ResponseCache
    from pytest_iterate.client.client import LLMClient
    from pytest_iterate.client.config import IterateConfig
    from pytest_iterate.client.errors import Busy, ContextOverflow, IterateError
    from pytest_iterate.client.metrics import IterateMetrics
    from pytest_iterate.client.types import GuardWarning, LLMRequest, LLMResponse, Usage
    from pytest_iterate.doubles.mock.core import MockLLM
    from pytest_iterate.doubles.mock.server import MockServer
    from pytest_iterate.pipeline.design import DesignRequest
    from pytest_iterate.pipeline.runner import Pipeline, PipelineResult
    from pytest_iterate.pipeline.workload import load_workload
    from pytest_iterate.tokens.counter import TokenCounter
    from pytest_iterate.tokens.guard import TokenGuard

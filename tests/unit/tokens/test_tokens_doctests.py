"""The examples in the token modules' docstrings are true."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = [
    "pytest_iterate.tokens.bounds",
    "pytest_iterate.tokens.counter",
    "pytest_iterate.tokens.scripts",
    "pytest_iterate.tokens.server",
    "pytest_iterate.tokens.windows",
    "pytest_iterate.doubles.foreign",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0

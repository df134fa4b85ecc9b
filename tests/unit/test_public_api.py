"""The package's public API: every exported name resolves, and importing the package is free."""

from __future__ import annotations

import subprocess
import sys

import pytest

import pytest_iterate


@pytest.mark.parametrize("name", [n for n in pytest_iterate.__all__ if n != "__version__"])
def test_every_exported_name_resolves(name: str) -> None:
    value = getattr(pytest_iterate, name)
    assert getattr(value, "__name__", name) == name


def test_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no_such_thing"):
        pytest_iterate.no_such_thing  # noqa: B018


def test_importing_the_package_imports_nothing_heavy() -> None:
    code = (
        "import sys, pytest_iterate\n"
        "heavy = [m for m in ('aiohttp', 'httpx', 'tiktoken', 'diskcache', 'prometheus_client', "
        "'pytest_iterate.pipeline') if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_the_lazy_export_table_and_all_list_the_same_names() -> None:
    assert set(pytest_iterate._EXPORTS) == set(pytest_iterate.__all__) - {"__version__"}

"""The pytest-iterate benchmarking harness: load shapes, runner, statistics, reports, comparison.

Modules (one idea each): :mod:`pytest_iterate.harness.samples` (per-request records),
:mod:`pytest_iterate.harness.loads` (closed loop, constant rate, poisson), :mod:`pytest_iterate.harness.runner`
(``run_load``, ``saturate``), :mod:`pytest_iterate.harness.stats` (``summarize``),
:mod:`pytest_iterate.harness.progress`, :mod:`pytest_iterate.harness.reports` (``build_report``, ``write_reports``),
:mod:`pytest_iterate.harness.compare` (baseline gating), :mod:`pytest_iterate.harness.cli` (``iterate-bench``).
Definitions of every measurement: ``harness/DEFINITIONS.md``. Importing this package
imports nothing else.
"""

__all__: list[str] = []

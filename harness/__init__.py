"""The pytest-iterate benchmarking harness: load shapes, runner, statistics, reports, comparison.

Modules (one idea each): :mod:`harness.samples` (per-request records),
:mod:`harness.loads` (closed loop, constant rate, poisson), :mod:`harness.runner`
(``run_load``, ``saturate``), :mod:`harness.stats` (``summarize``),
:mod:`harness.progress`, :mod:`harness.reports` (``build_report``, ``write_reports``),
:mod:`harness.compare` (baseline gating), :mod:`harness.cli` (``iterate-bench``).
Definitions of every measurement: ``harness/DEFINITIONS.md``. Importing this package
imports nothing else.
"""

__all__: list[str] = []

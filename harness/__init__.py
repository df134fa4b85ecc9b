"""The pytest-iterate benchmarking harness: load shapes, runner, statistics, reports, comparison.

Installed as ``pytest_iterate.harness``. Modules (one idea each):

    samples.py      RequestSample: what one request did, on the runner's clock
    loads.py        load shapes: closed loop, constant rate, poisson
    runner.py       run_load (drive a send coroutine with a shape), saturate
    stats.py        summarize: raw samples -> ScenarioSummary; mann_whitney_u
    summary.py      the typed results: ScenarioSummary, CriterionResult, Report (JSON in and out)
    fmt.py          how numbers are shown
    progress.py     the live progress line, one summary line per scenario
    reports/        one writer per format (JSON, Markdown, HTML, benchmark JSON, Prometheus)
    compare.py      baseline gating
    workloads.py    what iterate-bench sends: design, prompt or chat JSONL, synthetic prompts
    limits.py       client limits that follow the load (no cap nobody asked for)
    transport.py    extra headers and the count of requests on the wire
    targets.py      what iterate-bench sends to: the pipeline or raw HTTP, on an endpoint
    workers.py      the same steps from N processes (--workers): split, run, merge
    paths.py        where iterate-bench keeps files (the user cache directory)
    cli.py          iterate-bench

Definitions of every measurement: ``DEFINITIONS.md`` next to this file. Importing this
package imports nothing else.
"""

__all__: list[str] = []

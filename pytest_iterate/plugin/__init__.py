"""The pytest plugin: thin hooks over the library (entry point ``pytest11: iterate``).

    hooks.py        the hooks; inert unless --iterate is given
    options.py      the option table and its one resolution
    session.py      per-session state: criteria, bench runs, reports, the baseline gate
    fixtures.py     llm_client, llm_pipeline, mock_llm, iterate_bench, ...
    budget.py       the iterate_budget marker

This package is imported on every pytest start: nothing here imports the pipeline at
module level.
"""

"""Locust sending pytest-iterate's workload, writing the reports ``iterate-bench`` writes.

One machine, one process (the endpoint: ``iterate-bench serve-mock --profile fast --port 8000``)::

    locust -f examples/locustfile.py --headless -u 20 -r 20 -t 30s --host http://127.0.0.1:8000

One machine, a master and two worker processes (the same for several machines: start the
workers there with ``--master-host`` naming the master's address)::

    locust -f examples/locustfile.py --headless --master --expect-workers 2 -u 20 -r 20 -t 30s \\
        --host http://127.0.0.1:8000
    locust -f examples/locustfile.py --worker     # twice, in two more terminals

The master writes reports/iterate-report.json (and .md, .html, benchmark.json, metrics.prom);
``iterate-bench compare reports/baseline reports`` gates it like any other run. Options:
``--iterate-raw`` (bare HTTP), ``--iterate-workload FILE``, ``--iterate-synthetic SPEC``,
``--iterate-stream``, ``--iterate-scenario NAME``, ``--iterate-report-dir DIR``
(``locust --help`` lists them all).
"""

from locust import constant

from pytest_iterate.integrations.locust import IterateUser


class Designs(IterateUser):
    """The standard design workload through the pipeline, each user back to back."""

    wait_time = constant(0)

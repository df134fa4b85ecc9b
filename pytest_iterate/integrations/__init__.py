"""Optional integrations with other tools; each needs its extra installed.

    locust.py   a Locust user driving the pipeline (or bare HTTP), reports as iterate-bench's
                (``pip install 'pytest-iterate[locust]'``)

Nothing in the plugin, the library or ``iterate-bench`` imports this package: the tool it
integrates with is imported only by whoever imports the module (a locustfile).
"""

__all__: list[str] = []

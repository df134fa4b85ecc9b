"""The pipeline as an OpenAI-compatible HTTP service (``iterate-bench serve-pipeline``).

app.py        PipelineService: routes, streaming, Busy as 503 + Retry-After, /metrics, /health
protocol.py   the OpenAI wire format on the service side: bodies in, answers and errors out
cli.py        the serve-pipeline command
"""

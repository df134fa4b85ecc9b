"""The LLM client layer: one OpenAI-compatible endpoint, called fast and safely.

    types.py        LLMRequest, LLMResponse, Usage, GuardWarning, the Caller protocol
    errors.py       the exception tree (every error that reaches user code)
    config.py       IterateConfig: every layer's settings, read and validated once
    transport/      the wire: aiohttp (default) and httpx behind one narrow interface
    secret.py       Secret (a key whose repr is masked), redact_url for any URL shown or stored
    sse.py          incremental server-sent-events decoding
    wire.py         the OpenAI wire protocol: request bytes, JSON and SSE answers, status errors
    client.py       LLMClient: composes transport, throttle, retry and telemetry around wire.py
    retry.py        tenacity policy (which errors, backoff, Retry-After)
    throttle.py     concurrency slots, a bounded queue (Busy), rate-limit headers
    telemetry.py    stage timings and JSON logs
    metrics.py      the Prometheus registry owned by one pipeline; metrics_server.py serves it

Nothing here knows the cache, the token guard, the design pipeline or the test doubles.
Importing the package imports none of its modules.
"""

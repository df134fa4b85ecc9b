"""The LLM client layer: one OpenAI-compatible endpoint, called fast and safely.

    types.py        LLMRequest, LLMResponse, Usage, GuardWarning, the Caller protocol
    errors.py       the exception tree (every error that reaches user code)
    config.py       IterateConfig: every layer's settings, read and validated once
    transport/      the wire: aiohttp (default) and httpx behind one narrow interface
    sse.py          incremental server-sent-events decoding
    client.py       LLMClient: retry, throttle and telemetry around one HTTP attempt
    retry.py        tenacity policy (which errors, backoff, Retry-After)
    throttle.py     concurrency slots, a bounded queue (Busy), rate-limit headers
    telemetry.py    stage timings and JSON logs
    metrics.py      the Prometheus registry owned by one pipeline; metrics_server.py serves it

Nothing here knows the cache, the token guard, the design pipeline or the test doubles.
Importing the package imports none of its modules.
"""

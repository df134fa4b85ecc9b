"""The fast, cached, async LLM pipeline (client, retry, throttle, cache, tokens, stages)."""

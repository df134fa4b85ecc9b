"""The response cache: keys, memory and disk tiers, single flight, the caching layer."""

from __future__ import annotations

from pytest_iterate.cache.keys import (
    DENY_FIELDS,
    KEY_VERSION,
    KeyBuilder,
    cache_key,
    cache_key_from_body,
    normalize_base_url,
)
from pytest_iterate.cache.layer import CachingCaller
from pytest_iterate.cache.memory import MemoryLRU
from pytest_iterate.cache.singleflight import SingleFlight
from pytest_iterate.cache.tiered import CacheStats, ResponseCache, TierStats

__all__ = [
    "DENY_FIELDS",
    "KEY_VERSION",
    "CacheStats",
    "CachingCaller",
    "KeyBuilder",
    "MemoryLRU",
    "ResponseCache",
    "SingleFlight",
    "TierStats",
    "cache_key",
    "cache_key_from_body",
    "normalize_base_url",
]

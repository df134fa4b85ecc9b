"""The response cache: keys, memory and disk tiers, single flight, the caching layer.

KeyBuilder, cache_key    versioned sha256 keys over what changes the answer
MemoryLRU, ResponseCache the memory tier in front of the diskcache tier, stats, metrics
SingleFlight             identical keys in flight share one call
CachingCaller            the cache as a Caller layer; phases lookup -> CacheLookup, fetch
"""

from __future__ import annotations

from pytest_iterate.cache.keys import (
    DENY_FIELDS,
    KEY_VERSION,
    KeyBuilder,
    cache_key,
    cache_key_from_body,
    normalize_base_url,
)
from pytest_iterate.cache.layer import CacheLookup, CachingCaller
from pytest_iterate.cache.memory import MemoryLRU
from pytest_iterate.cache.singleflight import SingleFlight
from pytest_iterate.cache.tiered import CacheStats, ResponseCache, TierStats

__all__ = [
    "DENY_FIELDS",
    "KEY_VERSION",
    "CacheLookup",
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

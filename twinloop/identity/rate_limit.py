"""A token bucket per API key, in the gateway's memory.

A key may send a minute's worth of requests at once, then one every 60/limit seconds. Each
gateway keeps its own buckets: with several gateways a key gets its limit from each.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from twinloop.identity.errors import RateLimitedError


@dataclass
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._buckets: dict[str, _Bucket] = {}

    def take(self, key_id: str, *, per_minute: int) -> None:
        """Let one request of `key_id` through, or raise RateLimitedError (costing nothing)."""
        now = self._clock()
        capacity, per_second = float(per_minute), per_minute / 60.0
        bucket = self._buckets.setdefault(key_id, _Bucket(tokens=capacity, updated=now))
        bucket.tokens = min(capacity, bucket.tokens + (now - bucket.updated) * per_second)
        bucket.updated = now
        if bucket.tokens >= 1.0 - 1e-9:  # float sums of refills may land a hair below 1
            bucket.tokens -= 1.0
            return
        raise RateLimitedError(
            f"this API key may make {per_minute} requests a minute; retry later",
            retry_after_s=(1.0 - bucket.tokens) / per_second,
        )

    def forget(self, key_id: str) -> None:
        self._buckets.pop(key_id, None)

"""The per-key token bucket: a minute's worth at once, then one request per 60/limit seconds."""

from __future__ import annotations

import pytest

from twinloop.identity.errors import RateLimitedError
from twinloop.identity.rate_limit import RateLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_burst_up_to_the_limit_then_a_refusal_that_says_when_to_retry() -> None:
    clock = Clock()
    limiter = RateLimiter(clock=clock)
    for _ in range(3):
        limiter.take("k1", per_minute=3)

    with pytest.raises(RateLimitedError) as refused:
        limiter.take("k1", per_minute=3)

    assert refused.value.status_code == 429
    assert refused.value.headers == {"Retry-After": "20"}  # one token every 20 s
    clock.now += 19.0
    with pytest.raises(RateLimitedError) as again:
        limiter.take("k1", per_minute=3)
    assert again.value.headers == {"Retry-After": "1"}
    clock.now += 1.0
    limiter.take("k1", per_minute=3)


def test_each_key_has_its_own_bucket_and_refusals_cost_nothing() -> None:
    clock = Clock()
    limiter = RateLimiter(clock=clock)
    limiter.take("k1", per_minute=1)
    for _ in range(5):
        with pytest.raises(RateLimitedError):
            limiter.take("k1", per_minute=1)

    limiter.take("k2", per_minute=1)
    clock.now += 60.0
    limiter.take("k1", per_minute=1)  # refused requests did not push the refill back


def test_a_bucket_never_holds_more_than_a_minute_of_requests() -> None:
    clock = Clock()
    limiter = RateLimiter(clock=clock)
    limiter.take("k1", per_minute=2)
    clock.now += 3600.0
    limiter.take("k1", per_minute=2)
    limiter.take("k1", per_minute=2)
    with pytest.raises(RateLimitedError):
        limiter.take("k1", per_minute=2)

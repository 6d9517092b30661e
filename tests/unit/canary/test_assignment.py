"""Sticky assignment: one user one arm, growth keeps users, an even split, random unsticky."""

from __future__ import annotations

from random import Random

import pytest
from scipy.stats import binom

from twinloop.canary.assignment import BUCKETS, Arm, Assignment, assign, bucket_of
from twinloop.errors import InvalidRequestError

IDS = [f"user-{n}" for n in range(20_000)]


def _arm(user_id: str | None, percent: float, session_id: str | None = None) -> Assignment:
    return assign(percent=percent, user_id=user_id, session_id=session_id, rng=Random(0))


def test_a_user_gets_the_same_arm_and_bucket_every_time() -> None:
    first = [_arm(u, 10) for u in IDS[:500]]
    again = [assign(percent=10, user_id=u, session_id="other", rng=Random(7)) for u in IDS[:500]]

    assert first == again
    assert all(a.sticky and a.bucket is not None and 0 <= a.bucket < BUCKETS for a in first)


def test_the_bucket_is_a_known_stable_hash() -> None:
    # A fixed value: a change of hash or salt would move every user between arms.
    assert bucket_of("user:alice") == bucket_of("user:alice") == 3802
    assert bucket_of("user:alice", salt="other canary") != 3802


def test_session_id_is_used_only_without_user_id() -> None:
    by_session = _arm(None, 50, session_id="s-1")
    assert by_session.bucket == bucket_of("session:s-1")
    assert _arm("u-1", 50, session_id="s-1").bucket == bucket_of("user:u-1")
    assert _arm("", 50, session_id="s-1").bucket == by_session.bucket


def test_raising_the_percentage_keeps_every_canary_user() -> None:
    at_10 = {u for u in IDS if _arm(u, 10).arm is Arm.CANARY}
    at_20 = {u for u in IDS if _arm(u, 20).arm is Arm.CANARY}

    assert at_10 < at_20
    assert len(at_20) > 1.5 * len(at_10)


def test_the_split_over_many_ids_is_even() -> None:
    canary = sum(_arm(u, 10).arm is Arm.CANARY for u in IDS)

    # Two-sided 99.9 % binomial tolerance around 2 000 of 20 000.
    low, high = binom.interval(0.999, len(IDS), 0.10)
    assert low <= canary <= high, canary


@pytest.mark.parametrize(("percent", "arm"), [(0, Arm.ACTIVE), (100, Arm.CANARY)])
def test_zero_and_hundred_percent_are_all_or_nothing(percent: float, arm: Arm) -> None:
    assert {_arm(u, percent).arm for u in IDS[:2_000]} == {arm}


def test_requests_without_ids_are_split_at_random_and_unsticky() -> None:
    rng = Random(3)
    arms = [assign(percent=30, user_id=None, session_id=None, rng=rng) for _ in range(4_000)]

    assert all(not a.sticky and a.bucket is None for a in arms)
    canary = sum(a.arm is Arm.CANARY for a in arms)
    low, high = binom.interval(0.999, len(arms), 0.30)
    assert low <= canary <= high, canary


@pytest.mark.parametrize("percent", [-1, 100.5])
def test_percent_outside_0_100_is_refused(percent: float) -> None:
    with pytest.raises(InvalidRequestError, match="within \\[0, 100\\]"):
        _arm("u", percent)

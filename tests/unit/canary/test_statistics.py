"""The sequential tests: known values, and validity under repeated looks."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import binom

from twinloop.canary.statistics import ArmCounts, difference, paired_mean, rate_above


def test_one_error_in_three_is_no_evidence_two_in_two_is() -> None:
    blip = rate_above(1, 3, p0=0.05, alpha=0.05)
    breach = rate_above(2, 2, p0=0.05, alpha=0.01)

    assert blip.e_value == pytest.approx(1.9167, abs=1e-4) and not blip.rejected
    assert breach.e_value == pytest.approx(140.33, abs=0.01) and breach.rejected
    assert breach.anytime_p == pytest.approx(1 / 140.33, rel=1e-4)
    assert not rate_above(1, 5, p0=0.05, alpha=0.05).rejected


def test_data_far_below_the_bound_is_no_evidence() -> None:
    test = rate_above(0, 100_000, p0=0.05, alpha=0.05)

    assert test.e_value == 0.0 and test.anytime_p == 1.0 and not test.rejected


def test_rate_above_is_valid_at_the_bound_under_repeated_looks() -> None:
    """At p = p0, looking every 10 trials up to 400, it rejects at most alpha of the runs;
    the exact binomial test run at every look rejects far more (why it is not used)."""
    rng = np.random.default_rng(11)
    p0, alpha, runs = 0.05, 0.05, 600
    looks = np.arange(10, 401, 10)
    events = np.cumsum(rng.random((runs, looks[-1])) < p0, axis=1)[:, looks - 1]

    mixture = sum(
        any(
            rate_above(int(x), int(n), p0=p0, alpha=alpha).rejected
            for x, n in zip(row, looks, strict=True)
        )
        for row in events
    )
    fixed = np.any(binom.sf(events - 1, looks, p0) < alpha, axis=1).sum()

    assert mixture / runs <= alpha
    assert fixed / runs > 2 * alpha


def test_the_difference_bound_inverts_the_mixture_likelihood_ratio() -> None:
    bound = difference((30, 200), (200, 2000), alpha=0.05, tau=0.05)

    assert bound.low < bound.estimate < bound.high
    assert bound.estimate == pytest.approx(31 / 202 - 201 / 2002)
    assert bound.observed == pytest.approx(30 / 200 - 200 / 2000)
    for edge in (bound.low, bound.high):
        assert bound.log_likelihood_ratio(edge) == pytest.approx(math.log(20), abs=1e-6)
    assert bound.log_likelihood_ratio(bound.estimate) < math.log(20)


def test_no_trials_bound_nothing() -> None:
    bound = difference((0, 0), (0, 0), alpha=0.05, tau=0.02)

    assert bound.observed is None and (bound.low, bound.high) == (-1.0, 1.0)


def test_the_difference_covers_the_truth_at_every_look() -> None:
    """Same true rate in both arms, 10 % traffic to the canary, a look every 20 canary
    requests up to 1 000: the sequence misses 0 at some look in at most alpha of the runs."""
    rng = np.random.default_rng(5)
    runs, alpha = 400, 0.05
    canary = np.cumsum(rng.random((runs, 1000)) < 0.3, axis=1)
    active = np.cumsum(rng.random((runs, 9000)) < 0.3, axis=1)

    missed = 0
    for c, a in zip(canary, active, strict=True):
        for n in range(20, 1001, 20):
            bound = difference((int(c[n - 1]), n), (int(a[9 * n - 1]), 9 * n), alpha=alpha,
                               tau=0.05)  # fmt: skip
            if not bound.low <= 0 <= bound.high:
                missed += 1
                break
    assert missed / runs <= alpha


def test_arm_counts_summary_and_checks() -> None:
    arm = ArmCounts(requests=10, engine_errors=1, timeouts=1, latencies_ms=(100.0,) * 8,
                    thumbs_up=3, thumbs_down=1, corrections=1)  # fmt: skip

    assert arm.summary() == {
        "requests": 10, "engine_errors": 1, "timeouts": 1, "error_rate": 0.2,
        "latency_samples": 8, "p50_ms": 100.0, "p95_ms": 100.0, "thumbs_up": 3,
        "thumbs_down": 1, "corrections": 1, "positive_rate": 0.75,
    }  # fmt: skip
    assert ArmCounts().error_rate is None and ArmCounts().positive_rate is None
    assert ArmCounts().p95_ms is None
    with pytest.raises(ValueError, match="fail more"):
        ArmCounts(requests=1, engine_errors=2)
    with pytest.raises(ValueError, match="negative"):
        ArmCounts(thumbs_up=-1)


def test_the_paired_mean_narrows_with_ties_and_centres_on_wins_minus_losses() -> None:
    few = paired_mean(0, 20, 0, alpha=0.025, tau=0.05)
    many = paired_mean(0, 300, 0, alpha=0.025, tau=0.05)
    worse = paired_mean(10, 50, 60, alpha=0.01, tau=0.05)

    assert few.low < -0.05 < many.low and many.high < 0.05
    assert many.estimate == 0.0 and many.summary()["observed"] == 0.0
    assert worse.estimate == pytest.approx(-50 / 122) and worse.high < -0.05
    assert paired_mean(0, 0, 0, alpha=0.05, tau=0.05).summary()["observed"] is None
    with pytest.raises(ValueError, match="negative"):
        paired_mean(-1, 0, 0, alpha=0.05, tau=0.05)

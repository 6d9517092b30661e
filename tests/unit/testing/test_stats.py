from __future__ import annotations

import statistics

import pytest

from twinloop.testing.stats import percentile


def test_percentiles_interpolate_like_statistics_quantiles_inclusive() -> None:
    values = [float(v) for v in (13, 1, 8, 21, 5, 3, 2, 34, 55, 89, 144)]
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    for q in (1, 10, 50, 90, 99):
        assert percentile(values, q / 100) == pytest.approx(cuts[q - 1])


def test_the_ends_are_the_minimum_and_the_maximum_and_p50_of_two_is_their_mean() -> None:
    assert (percentile([3.0, 1.0, 2.0], 0), percentile([3.0, 1.0, 2.0], 1)) == (1.0, 3.0)
    assert percentile([1.0, 2.0], 0.5) == 1.5
    assert percentile([7.0], 0.99) == 7.0


def test_no_values_or_a_q_outside_0_1_is_refused() -> None:
    with pytest.raises(ValueError, match="no values"):
        percentile([], 0.5)
    with pytest.raises(ValueError, match="q must be"):
        percentile([1.0], 99)

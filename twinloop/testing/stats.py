"""Percentiles as every benchmark reports them."""

from __future__ import annotations

import math
from collections.abc import Sequence


def percentile(values: Sequence[float], q: float) -> float:
    """The `q` quantile (0 to 1) of `values`, interpolated linearly between closest ranks.

    The definition of numpy's default and of `statistics.quantiles(method="inclusive")`
    (what bench/gateway_overhead.py reports): p50 of an even count is the mean of the
    middle two, p99 of 100 values lies between the 99th and the 100th.
    """
    if not values:
        raise ValueError("no values to take a percentile of")
    if not 0 <= q <= 1:
        raise ValueError(f"q must be in [0, 1], got {q}")
    ordered = sorted(values)
    position = q * (len(ordered) - 1)
    below = math.floor(position)
    above = min(below + 1, len(ordered) - 1)
    return ordered[below] + (ordered[above] - ordered[below]) * (position - below)

"""Per-arm counts of a canary, and the two sequential tests its decision is built on.

Both tests stay valid however often they are evaluated as data arrives ("always valid",
"anytime valid"): the chance that they *ever* reject a true null hypothesis, over the whole
canary, is at most alpha. A fixed-sample test evaluated after every request would not be:
its false-alarm rate grows towards 1 with the number of looks.

**A rate above a bound** (`rate_above`): the error rate against the SLO, the share of slow
requests against 5 %, the share of losses among decided pairs against 1/2. The test is a
mixture sequential probability ratio test (Robbins 1970) for i.i.d. Bernoulli outcomes,
`H0: p <= p0` against `p > p0`. The likelihood ratio of every `p > p0` against `p0`,
averaged over a uniform prior on `(p0, 1]`, is

    M_n = B(1 + x, 1 + n - x) * P(Beta(1 + x, 1 + n - x) > p0)
          / ((1 - p0) * p0**x * (1 - p0)**(n - x))

for `x` events in `n` trials (scipy's `betaln` and regularised incomplete beta `betaincc`).
Under any `p <= p0`, `M_n` is a non-negative supermartingale with `M_0 = 1`, so by Ville's
inequality `P(sup_n M_n >= 1/alpha) <= alpha`: rejecting when `M_n >= 1/alpha` is a level
alpha test at every stopping time, and `min(1, 1/M_n)` is an anytime-valid p-value. It is
exact (no normal approximation), so it may act on the first few requests: with `p0 = 0.05`,
1 error in 3 requests gives `M = 1.9` and 2 in 2 gives `M = 140`.

**A difference of two rates** (`difference`, and `paired_mean` for one sample of paired
scores in [-1, 1], with the same mixture): the canary's rate minus Active's, for error
rate and positive-feedback rate. The test is the normal-mixture mSPRT of Johari, Koomen,
Pekelis and Walsh (2022), the one behind Optimizely's Stats Engine. With `d` the difference
of the Agresti-Caffo estimates (one success and one failure added to each arm, which keeps
the variance away from 0 with no events yet) and `V` its plug-in variance
`p_c (1 - p_c) / (n_c + 2) + p_a (1 - p_a) / (n_a + 2)`, the mixture likelihood ratio of
`theta ~ N(theta0, tau^2)` against `theta0` is

    Lambda(theta0) = N(d; theta0, V + tau^2) / N(d; theta0, V)      (scipy.stats.norm)

and `{theta0: Lambda(theta0) < 1/alpha}` is a confidence sequence, `d +- half` with
`half^2 = V (V + tau^2) / tau^2 * (2 log(1/alpha) + log((V + tau^2) / V))`: it covers the
true difference at every look at once with probability at least `1 - alpha`. The mixing
scale `tau` is the margin the bound is compared with, so the sequence is tightest around the
sample sizes where it can decide that margin.

Assumptions, stated so that they can be checked:

* each arm's outcomes are independent draws with a rate that does not drift during the
  canary. Sticky assignment makes one user's requests correlated (a heavy user counts many
  times); the tests then are optimistic in proportion to how uneven use is.
* the difference test is asymptotic: it rests on the normal approximation of `d` with a
  plug-in variance (Johari et al., section 4; Waudby-Smith et al. 2024 for asymptotic
  confidence sequences). It is conservative on small samples (the mixture widens the bound
  most there) but is only trusted for promotion from `min_requests` on.

References: H. Robbins, "Statistical methods related to the law of the iterated logarithm",
Ann. Math. Statist. 41 (1970); R. Johari, P. Koomen, L. Pekelis, D. Walsh, "Always valid
inference: continuous monitoring of A/B tests", Operations Research 70(3) (2022);
S. R. Howard, A. Ramdas, J. McAuliffe, J. Sekhon, "Time-uniform, nonparametric,
nonasymptotic confidence sequences", Ann. Statist. 49(2) (2021); A. Agresti, B. Caffo,
"Simple and effective confidence intervals for proportions and differences of proportions
result from adding two successes and two failures", Amer. Statist. 54(4) (2000).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

_MAX_LOG = 690.0  # exp() of more overflows a float; such evidence is reported as e^690


@dataclass(frozen=True)
class ArmCounts:
    """What one arm served during the canary.

    `latencies_ms` are those of the requests the arm answered (failures count in
    `engine_errors` / `timeouts`). Ratings are the users' thumbs on answers this arm served;
    `corrections` are ratings that also say what the answer should have been: already among
    the thumbs (mostly down), reported on their own.
    """

    requests: int = 0
    engine_errors: int = 0
    timeouts: int = 0
    latencies_ms: tuple[float, ...] = ()
    thumbs_up: int = 0
    thumbs_down: int = 0
    corrections: int = 0

    def __post_init__(self) -> None:
        counts = (self.requests, self.engine_errors, self.timeouts, self.thumbs_up,
                  self.thumbs_down, self.corrections)  # fmt: skip
        if min(counts) < 0:
            raise ValueError(f"arm counts cannot be negative: {counts}")
        if self.failures > self.requests:
            raise ValueError("an arm cannot fail more requests than it served")

    @property
    def failures(self) -> int:
        return self.engine_errors + self.timeouts

    @property
    def rated(self) -> int:
        return self.thumbs_up + self.thumbs_down

    @property
    def error_rate(self) -> float | None:
        return self.failures / self.requests if self.requests else None

    @property
    def positive_rate(self) -> float | None:
        return self.thumbs_up / self.rated if self.rated else None

    @property
    def p50_ms(self) -> float | None:
        return self._quantiles[0] if self._quantiles else None

    @property
    def p95_ms(self) -> float | None:
        return self._quantiles[1] if self._quantiles else None

    @cached_property
    def _quantiles(self) -> tuple[float, float] | None:
        if not self.latencies_ms:
            return None
        p50, p95 = np.quantile(np.asarray(self.latencies_ms, dtype=np.float64), [0.50, 0.95])
        return float(p50), float(p95)

    def summary(self) -> dict[str, Any]:
        """The counts as JSON (latencies as p50 / p95 and their number)."""
        return {
            "requests": self.requests,
            "engine_errors": self.engine_errors,
            "timeouts": self.timeouts,
            "error_rate": self.error_rate,
            "latency_samples": len(self.latencies_ms),
            "p50_ms": self.p50_ms,
            "p95_ms": self.p95_ms,
            "thumbs_up": self.thumbs_up,
            "thumbs_down": self.thumbs_down,
            "corrections": self.corrections,
            "positive_rate": self.positive_rate,
        }


@dataclass(frozen=True)
class RateAbove:
    """The always-valid test of `H0: p <= p0` on `events` in `trials` (mixture SPRT)."""

    events: int
    trials: int
    p0: float
    alpha: float
    log_e: float  # log of the mixture likelihood ratio M_n

    @property
    def threshold(self) -> float:
        return 1 / self.alpha

    @property
    def rejected(self) -> bool:
        return self.log_e >= math.log(self.threshold)

    @property
    def e_value(self) -> float:
        return math.exp(min(self.log_e, _MAX_LOG))

    @property
    def anytime_p(self) -> float:
        return min(1.0, math.exp(-min(self.log_e, _MAX_LOG)))

    def summary(self) -> dict[str, Any]:
        return {
            "events": self.events,
            "trials": self.trials,
            "bound": self.p0,
            "alpha": self.alpha,
            "e_value": self.e_value,
            "threshold": self.threshold,
            "anytime_p": self.anytime_p,
            "rejected": self.rejected,
        }


def rate_above(events: int, trials: int, *, p0: float, alpha: float) -> RateAbove:
    """Evidence that the rate of `events` exceeds `p0`, valid under repeated looks."""
    from scipy.special import betaincc, betaln

    if not 0 <= events <= trials:
        raise ValueError(f"events must be within [0, trials], not {events} of {trials}")
    rest = trials - events
    tail = float(betaincc(1 + events, 1 + rest, p0))  # P(Beta(1 + x, 1 + n - x) > p0)
    if tail == 0.0:  # underflow: the data lie far below p0, no evidence at all
        log_e = -math.inf
    else:
        log_e = (
            float(betaln(1 + events, 1 + rest))
            + math.log(tail)
            - math.log1p(-p0)
            - events * math.log(p0)
            - rest * math.log1p(-p0)
        )
    return RateAbove(events, trials, p0, alpha, log_e)


@dataclass(frozen=True)
class Difference:
    """Confidence sequence for (canary rate - Active rate) at `1 - alpha` (normal-mixture mSPRT)."""

    canary_events: int
    canary_trials: int
    active_events: int
    active_trials: int
    estimate: float  # of the Agresti-Caffo estimates
    variance: float
    low: float
    high: float
    alpha: float
    tau: float

    @property
    def observed(self) -> float | None:
        """The plain difference of the observed rates (None while an arm has no trials)."""
        if not (self.canary_trials and self.active_trials):
            return None
        return self.canary_events / self.canary_trials - self.active_events / self.active_trials

    def log_likelihood_ratio(self, theta0: float) -> float:
        """log Lambda(theta0): the mixture's evidence against a true difference of theta0."""
        from scipy.stats import norm

        v, t2 = self.variance, self.tau**2
        mixture, null = norm.logpdf(self.estimate, theta0, [math.sqrt(v + t2), math.sqrt(v)])
        return float(mixture - null)

    def summary(self) -> dict[str, Any]:
        return {
            "canary": [self.canary_events, self.canary_trials],
            "active": [self.active_events, self.active_trials],
            "observed": self.observed,
            "estimate": self.estimate,
            "low": self.low,
            "high": self.high,
            "confidence": 1 - self.alpha,
            "tau": self.tau,
        }

    @property
    def e_no_difference(self) -> float:
        """The mixture's evidence so far that the two rates differ at all."""
        return math.exp(min(self.log_likelihood_ratio(0.0), _MAX_LOG))


def difference(
    canary: tuple[int, int], active: tuple[int, int], *, alpha: float, tau: float
) -> Difference:
    """The confidence sequence of the rate difference from (events, trials) of each arm."""
    (xc, nc), (xa, na) = canary, active
    if not (0 <= xc <= nc and 0 <= xa <= na):
        raise ValueError(f"events must be within [0, trials]: {canary}, {active}")
    pc, pa = (xc + 1) / (nc + 2), (xa + 1) / (na + 2)
    v = pc * (1 - pc) / (nc + 2) + pa * (1 - pa) / (na + 2)
    half = _half_width(v, alpha=alpha, tau=tau)
    d = pc - pa  # a difference of rates lies in [-1, 1]: the bound is cut there
    return Difference(xc, nc, xa, na, d, v, max(-1.0, d - half), min(1.0, d + half), alpha, tau)


def _half_width(variance: float, *, alpha: float, tau: float) -> float:
    """Half the width of the normal-mixture confidence sequence around an estimate."""
    v, t2 = variance, tau**2
    return math.sqrt(v * (v + t2) / t2 * (2 * math.log(1 / alpha) + math.log((v + t2) / v)))


@dataclass(frozen=True)
class PairedMean:
    """Confidence sequence for the mean pair score (win +1, tie 0, loss -1) at `1 - alpha`.

    The same normal-mixture mSPRT as `difference`, on one sample of paired scores: the
    estimate adds one win and one loss (as Agresti-Caffo adds a success and a failure), so
    that a run of ties has a variance above 0 and the bound narrows as ties accumulate.
    """

    wins: int
    ties: int
    losses: int
    estimate: float
    variance: float
    low: float
    high: float
    alpha: float
    tau: float

    def summary(self) -> dict[str, Any]:
        n = self.wins + self.ties + self.losses
        return {
            "pairs": n,
            "observed": (self.wins - self.losses) / n if n else None,
            "estimate": self.estimate,
            "low": self.low,
            "high": self.high,
            "confidence": 1 - self.alpha,
            "tau": self.tau,
        }


def paired_mean(wins: int, ties: int, losses: int, *, alpha: float, tau: float) -> PairedMean:
    """The confidence sequence of the canary's mean pair score, from its pair outcomes."""
    if min(wins, ties, losses) < 0:
        raise ValueError(f"pair counts cannot be negative: {wins}, {ties}, {losses}")
    n = wins + ties + losses + 2
    mean = (wins - losses) / n
    second_moment = (wins + losses + 2) / n
    v = (second_moment - mean**2) / n
    half = _half_width(v, alpha=alpha, tau=tau)
    return PairedMean(
        wins, ties, losses, mean, v, max(-1.0, mean - half), min(1.0, mean + half), alpha, tau
    )

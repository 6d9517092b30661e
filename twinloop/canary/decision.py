"""The canary's decision: continue, promote, abort or inconclusive, with every figure used.

`decide` is evaluated again and again as data arrives; each rule uses a test that stays
valid under such repeated looks (see `statistics` for the methods, their assumptions and
references). With `alpha = 1 - confidence`:

**Abort at once**, whatever the sample size, when any of these is shown, each at
`alpha / 6` (Bonferroni over the six rules, so that a canary as good as Active is aborted
with probability at most `alpha` over the whole canary):

* *error SLO*: the canary's error rate (engine errors and timeouts over requests) is above
  `error_slo` (mixture SPRT) and above Active's observed rate (an outage of both arms is no
  reason to blame the canary);
* *latency*: more than 5 % of the canary's latencies exceed `latency_factor` times Active's
  p95, i.e. the canary's p95 is beyond that multiple (mixture SPRT on the exceedances,
  with Active's p95 taken as known: it has many times the canary's samples), once both arms
  have `latency_min_samples`;
* *errors inferior*: the canary's error rate is above Active's by more than `error_margin`
  (the confidence sequence's lower bound is above the margin);
* *feedback inferior*: the canary's positive-feedback rate (thumbs up over rated answers)
  is below Active's by more than `feedback_margin`;
* *pairs inferior*: the canary's mean pair score (win +1, tie 0, loss -1 over the mirrored
  pairs with an outcome) is below `-pair_margin` (`statistics.paired_mean`'s upper bound);
* *drift*: more than `drift_bound` of the canary's answers on drift domains (general
  questions) left Active's (mixture SPRT on the drifted pairs): forgetting shows here
  before any user rates it.

**Promote** when no abort rule fires, both arms have `min_requests`, and at `confidence`
(no split: promotion needs every check, an intersection-union test, Berger 1982):

* the canary is non-inferior on error rate: the upper bound of (canary - Active) is below
  `error_margin`;
* it is non-inferior on answer quality: positive feedback's lower bound is above
  `-feedback_margin` (no ratings, no promotion: the bound stays wide) or, when mirroring
  is on, the mean pair score's lower bound is above `-pair_margin`. With mirroring each of
  the two is tested at `alpha / 2`, so that together they stay at `alpha`; ratings are few
  (a share of a share of users rate), pairs come with every mirrored request, which is how
  mirroring decides with fewer user requests. Feedback clearly worse still aborts;
* the paired comparison is not significantly worse (sign test, `pairs.sign_test`; with no
  mirrored pairs there is nothing to hold promotion back).

So a canary worse than Active by a margin on errors or feedback is promoted with
probability at most `alpha`, however often `decide` is evaluated.

**Inconclusive** once `max_duration_s` has passed with neither: never a silent pass; an
admin decides. **Continue** otherwise. The reason names every rule that decided or, for
continue and inconclusive, everything still missing.

References: R. L. Berger, "Multiparameter hypothesis testing and acceptance sampling",
Technometrics 24(4) (1982), for the intersection-union test.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import numpy as np

from twinloop.canary.pairs import PairTally, SignTest, sign_test
from twinloop.canary.statistics import (
    ArmCounts,
    Difference,
    PairedMean,
    RateAbove,
    difference,
    paired_mean,
    rate_above,
)
from twinloop.settings import CanarySettings

ABORT_RULES = (
    "error_slo", "latency", "errors_inferior", "feedback_inferior", "pairs_inferior", "drift",
)  # fmt: skip
METHODS = {
    "rate_above": "mixture SPRT, uniform prior on (bound, 1], Ville's inequality (Robbins 1970)",
    "difference": "normal-mixture mSPRT confidence sequence on Agresti-Caffo estimates, "
    "mixing scale = margin (Johari et al. 2022)",
    "paired_mean": "normal-mixture mSPRT confidence sequence on the mean pair score, one win "
    "and one loss added, mixing scale = pair margin",
    "sign_test": "exact one-sided binomial test of losses among decided pairs "
    "(scipy.stats.binomtest); holds back promotion only",
    "abort": "any of 6 rules, each at alpha/6 (Bonferroni)",
    "promote": "all checks at alpha (intersection-union test); quality by feedback or, "
    "with mirroring, by pairs, each at alpha/2",
}


class Verdict(StrEnum):
    CONTINUE = "continue"
    PROMOTE = "promote"
    ABORT = "abort"
    INCONCLUSIVE = "inconclusive"


@dataclass(frozen=True)
class Decision:
    verdict: Verdict
    reason: str
    stats: dict[str, Any]  # JSON: every figure the rules used


@dataclass(frozen=True)
class _Evidence:
    """Every test of one evaluation, computed once."""

    slo: RateAbove
    above_active: bool
    errors: Difference  # at alpha, for promotion
    errors_abort: Difference  # at alpha / 5
    feedback: Difference  # at alpha, or alpha / 2 with mirroring
    feedback_abort: Difference
    latency: dict[str, Any]
    pairs: PairedMean  # at alpha / 2, used only with mirroring
    pairs_abort: PairedMean
    drift: RateAbove
    signs: SignTest


def decide(
    active: ArmCounts,
    canary: ArmCounts,
    pairs: PairTally,
    cfg: CanarySettings,
    *,
    elapsed_s: float,
) -> Decision:
    """The decision on the counts so far; `elapsed_s` since the canary started."""
    alpha = round(1 - cfg.confidence, 12)  # 0.05, not 0.050000000000000044
    abort_alpha = alpha / len(ABORT_RULES)
    quality_alpha = alpha / 2 if cfg.mirror_percent > 0 else alpha
    errors = (canary.failures, canary.requests), (active.failures, active.requests)
    ratings = (canary.thumbs_up, canary.rated), (active.thumbs_up, active.rated)
    scores = pairs.wins, pairs.ties, pairs.losses
    ev = _Evidence(
        slo=rate_above(canary.failures, canary.requests, p0=cfg.error_slo, alpha=abort_alpha),
        above_active=(canary.error_rate or 0.0) > (active.error_rate or 0.0),
        errors=difference(*errors, alpha=alpha, tau=cfg.error_margin),
        errors_abort=difference(*errors, alpha=abort_alpha, tau=cfg.error_margin),
        feedback=difference(*ratings, alpha=quality_alpha, tau=cfg.feedback_margin),
        feedback_abort=difference(*ratings, alpha=abort_alpha, tau=cfg.feedback_margin),
        latency=_latency(active, canary, cfg, abort_alpha),
        pairs=paired_mean(*scores, alpha=alpha / 2, tau=cfg.pair_margin),
        pairs_abort=paired_mean(*scores, alpha=abort_alpha, tau=cfg.pair_margin),
        drift=rate_above(pairs.drifted, pairs.drift_pairs, p0=cfg.drift_bound, alpha=abort_alpha),
        signs=sign_test(pairs, alpha=alpha),
    )
    aborts = _aborts(active, canary, pairs, cfg, ev)
    checks = _checks(active, canary, pairs, cfg, ev)

    fired = [why for why in aborts.values() if why]
    missing = [says for met, says in checks.values() if not met]
    if fired:
        verdict, reason = Verdict.ABORT, "; ".join(fired)
    elif not missing:
        verdict = Verdict.PROMOTE
        reason = f"non-inferior at {cfg.confidence:.0%}: "
        reason += "; ".join(says for _, says in checks.values())
    elif elapsed_s >= cfg.max_duration_s:
        verdict = Verdict.INCONCLUSIVE
        reason = f"the deadline of {cfg.max_duration_s:g} s passed without a decision, an admin "
        reason += "decides; still missing: " + "; ".join(missing)
    else:
        verdict, reason = Verdict.CONTINUE, "not yet shown: " + "; ".join(missing)

    stats: dict[str, Any] = {
        "verdict": verdict.value,
        "elapsed_s": elapsed_s,
        "max_duration_s": cfg.max_duration_s,
        "time_left_s": max(0.0, cfg.max_duration_s - elapsed_s),
        "min_requests": cfg.min_requests,
        "confidence": cfg.confidence,
        "alpha": alpha,
        "abort_alpha": abort_alpha,
        "arms": {"active": active.summary(), "canary": canary.summary()},
        "errors": {
            "slo": {**ev.slo.summary(), "canary_above_active": ev.above_active},
            "margin": cfg.error_margin,
            "promote_bound": {**ev.errors.summary(), "e_no_difference": ev.errors.e_no_difference},
            "abort_bound": ev.errors_abort.summary(),
        },
        "feedback": {
            "margin": cfg.feedback_margin,
            "promote_bound": {
                **ev.feedback.summary(),
                "e_no_difference": ev.feedback.e_no_difference,
            },
            "abort_bound": ev.feedback_abort.summary(),
        },
        "latency": ev.latency,
        "pairs": {
            "mirror_percent": cfg.mirror_percent,
            "tally": pairs.summary(),
            "margin": cfg.pair_margin,
            "promote_bound": ev.pairs.summary(),
            "abort_bound": ev.pairs_abort.summary(),
            "sign_test": ev.signs.summary(),
            "drift": {
                **ev.drift.summary(),
                "domains": cfg.drift_domains,
                "similarity_below": cfg.drift_similarity,
            },
        },
        "checks": {
            "abort": {rule: why is not None for rule, why in aborts.items()},
            "promote": {name: met for name, (met, _) in checks.items()},
        },
        "methods": METHODS,
    }
    return Decision(verdict, f"{verdict.value}: {reason}", stats)


def _aborts(
    active: ArmCounts, canary: ArmCounts, pairs: PairTally, cfg: CanarySettings, ev: _Evidence
) -> dict[str, str | None]:
    """Each abort rule: why it fired, or None."""
    why: dict[str, str | None] = dict.fromkeys(ABORT_RULES)
    threshold = f"{ev.slo.threshold:.0f}"
    if ev.slo.rejected and ev.above_active:
        why["error_slo"] = (
            f"canary error rate {_pct(canary.failures, canary.requests)} is above the SLO "
            f"{cfg.error_slo:.1%} (e-value {ev.slo.e_value:.3g} >= {threshold}) and above "
            f"Active's {_pct(active.failures, active.requests)}"
        )
    lat = ev.latency
    if lat["breach"]:
        why["latency"] = (
            f"canary p95 latency {lat['canary_p95_ms']:.0f} ms is beyond {cfg.latency_factor:g} "
            f"x Active's {lat['active_p95_ms']:.0f} ms ({lat['test']['events']} of "
            f"{lat['test']['trials']} canary requests slower than {lat['threshold_ms']:.0f} ms, "
            f"e-value {lat['test']['e_value']:.3g} >= {threshold})"
        )
    if ev.errors_abort.low > cfg.error_margin:
        why["errors_inferior"] = (
            f"canary error rate {_pct(canary.failures, canary.requests)} is above Active's "
            f"{_pct(active.failures, active.requests)} by at least {ev.errors_abort.low:.3f}, "
            f"more than the margin {cfg.error_margin:g}"
        )
    if ev.feedback_abort.high < -cfg.feedback_margin:
        why["feedback_inferior"] = (
            f"canary positive feedback {_pct(canary.thumbs_up, canary.rated)} is below Active's "
            f"{_pct(active.thumbs_up, active.rated)} by at least {-ev.feedback_abort.high:.3f}, "
            f"more than the margin {cfg.feedback_margin:g}"
        )
    if ev.pairs_abort.high < -cfg.pair_margin:
        why["pairs_inferior"] = (
            f"canary won {pairs.wins}, tied {pairs.ties} and lost {pairs.losses} mirrored "
            f"pairs: its mean score is below 0 by at least {-ev.pairs_abort.high:.3f}, more "
            f"than the margin {cfg.pair_margin:g}"
        )
    if ev.drift.rejected:
        why["drift"] = (
            f"canary answers left Active's on {pairs.drifted} of {pairs.drift_pairs} mirrored "
            f"{'/'.join(cfg.drift_domains)} questions, above the bound {cfg.drift_bound:.0%} "
            f"(e-value {ev.drift.e_value:.3g} >= {threshold})"
        )
    return why


def _checks(
    active: ArmCounts, canary: ArmCounts, pairs: PairTally, cfg: CanarySettings, ev: _Evidence
) -> dict[str, tuple[bool, str]]:
    """Each promotion check: whether it is met, and its figures in words."""
    return {
        "min_requests": (
            min(canary.requests, active.requests) >= cfg.min_requests,
            f"{canary.requests} canary and {active.requests} Active requests of "
            f"{cfg.min_requests} each",
        ),
        "errors_non_inferior": (
            ev.errors.high < cfg.error_margin,
            f"error rate {_pct(canary.failures, canary.requests)} vs "
            f"{_pct(active.failures, active.requests)}, difference at most {ev.errors.high:.3f} "
            f"(needs < {cfg.error_margin:g})",
        ),
        "quality_non_inferior": _quality(active, canary, pairs, cfg, ev),
        "pairs_not_worse": (
            not ev.signs.worse,
            f"mirrored pairs {pairs.wins}/{pairs.ties}/{pairs.losses} win/tie/loss, sign test "
            f"p = {ev.signs.p_value:.3g} (worse below {ev.signs.alpha:.3g})",
        ),
    }


def _quality(
    active: ArmCounts, canary: ArmCounts, pairs: PairTally, cfg: CanarySettings, ev: _Evidence
) -> tuple[bool, str]:
    """Answer quality: by the users' ratings, or with mirroring by the pairs."""
    by_feedback = ev.feedback.low > -cfg.feedback_margin
    says = (
        f"positive feedback {_pct(canary.thumbs_up, canary.rated)} vs "
        f"{_pct(active.thumbs_up, active.rated)}, difference at least {ev.feedback.low:.3f} "
        f"(needs > {-cfg.feedback_margin:g})"
    )
    if cfg.mirror_percent <= 0:
        return by_feedback, says
    by_pairs = ev.pairs.low > -cfg.pair_margin
    says += (
        f", or mean pair score of {pairs.informative} mirrored pairs at least "
        f"{ev.pairs.low:.3f} (needs > {-cfg.pair_margin:g})"
    )
    return by_feedback or by_pairs, says


def _latency(
    active: ArmCounts, canary: ArmCounts, cfg: CanarySettings, alpha: float
) -> dict[str, Any]:
    """The p95 rule: the share of canary latencies beyond the factor of Active's p95."""
    active_p95, canary_p95 = active.p95_ms, canary.p95_ms
    samples = min(len(active.latencies_ms), len(canary.latencies_ms))
    figures: dict[str, Any] = {
        "factor": cfg.latency_factor,
        "min_samples": cfg.latency_min_samples,
        "active_p95_ms": active_p95,
        "canary_p95_ms": canary_p95,
        "threshold_ms": None,
        "test": None,
        "breach": False,
    }
    if samples < cfg.latency_min_samples or active_p95 is None or canary_p95 is None:
        return figures
    threshold = cfg.latency_factor * active_p95
    slower = int(np.count_nonzero(np.asarray(canary.latencies_ms) > threshold))
    test = rate_above(slower, len(canary.latencies_ms), p0=0.05, alpha=alpha)
    breach = test.rejected and canary_p95 > threshold
    figures.update(threshold_ms=threshold, test=test.summary(), breach=breach)
    return figures


def _pct(part: int, whole: int) -> str:
    return f"{part}/{whole} = {part / whole:.1%}" if whole else f"{part}/0"

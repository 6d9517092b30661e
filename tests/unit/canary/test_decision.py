"""The decision on synthetic counts, and its validity when evaluated after every batch."""

from __future__ import annotations

import json

import numpy as np
import pytest

from twinloop.canary.decision import ABORT_RULES, Decision, Verdict, decide
from twinloop.canary.pairs import PairTally
from twinloop.canary.statistics import ArmCounts
from twinloop.settings import CanarySettings

CFG = CanarySettings()  # 200 requests per arm, 3600 s, SLO 5 %, margins 0.02 / 0.05, 95 %
NO_PAIRS = PairTally()


def _arm(
    requests: int, failures: int = 0, up: int = 0, down: int = 0, *, latency_ms: float = 300.0
) -> ArmCounts:
    """Answered requests' latencies spread evenly over +-20 % around `latency_ms`."""
    answered = requests - failures
    latencies = tuple(float(x) for x in np.linspace(0.8, 1.2, answered) * latency_ms)
    return ArmCounts(requests=requests, engine_errors=failures, latencies_ms=latencies,
                     thumbs_up=up, thumbs_down=down)  # fmt: skip


def _decide(
    active: ArmCounts, canary: ArmCounts, pairs: PairTally = NO_PAIRS, elapsed_s: float = 600.0
) -> Decision:
    decision = decide(active, canary, pairs, CFG, elapsed_s=elapsed_s)
    json.dumps(decision.stats, allow_nan=False)  # storable as it is
    assert decision.stats["verdict"] == decision.verdict
    assert decision.reason.startswith(f"{decision.verdict}: ")
    return decision


def _fired(decision: Decision) -> set[str]:
    return {rule for rule, fired in decision.stats["checks"]["abort"].items() if fired}


def test_a_clear_win_is_promoted_with_its_figures() -> None:
    active = _arm(2000, 40, up=1000, down=400)
    canary = _arm(400, 2, up=250, down=50)

    decision = _decide(active, canary, PairTally(wins=30, ties=100, losses=10))

    assert decision.verdict is Verdict.PROMOTE
    assert all(decision.stats["checks"]["promote"].values()) and not _fired(decision)
    errors, feedback = decision.stats["errors"], decision.stats["feedback"]
    assert errors["promote_bound"]["high"] < min(0.02, errors["abort_bound"]["high"])
    assert feedback["promote_bound"]["low"] > -0.05
    assert decision.stats["arms"]["canary"]["requests"] == 400
    assert "2/400 = 0.5%" in decision.reason and "sign test p = " in decision.reason


def test_a_clear_loss_on_feedback_is_aborted() -> None:
    active = _arm(2000, 40, up=1000, down=400)
    canary = _arm(400, 2, up=120, down=180)

    decision = _decide(active, canary)

    assert decision.verdict is Verdict.ABORT and _fired(decision) == {"feedback_inferior"}
    assert "positive feedback 120/300 = 40.0% is below Active's" in decision.reason


def test_a_loss_on_mirrored_pairs_is_aborted_and_a_close_one_holds_promotion() -> None:
    active, canary = _arm(2000, 40, up=1000, down=400), _arm(400, 2, up=250, down=50)

    lost = _decide(active, canary, PairTally(wins=10, ties=50, losses=60))
    close = _decide(active, canary, PairTally(wins=12, ties=50, losses=26))

    assert lost.verdict is Verdict.ABORT and _fired(lost) == {"pairs_inferior"}
    assert "won 10, tied 50 and lost 60 mirrored pairs" in lost.reason
    assert close.verdict is Verdict.CONTINUE
    assert close.stats["checks"]["promote"]["pairs_not_worse"] is False
    assert close.stats["pairs"]["sign_test"]["p_value"] < 0.05


def test_an_slo_breach_is_aborted_before_the_minimum_sample() -> None:
    decision = _decide(_arm(135, 1), _arm(15, 6), elapsed_s=30.0)

    assert decision.verdict is Verdict.ABORT and "error_slo" in _fired(decision)
    assert "canary error rate 6/15 = 40.0% is above the SLO 5.0%" in decision.reason
    assert decision.stats["errors"]["slo"]["anytime_p"] < decision.stats["abort_alpha"]


def test_a_stopped_engine_is_aborted_after_two_failed_requests() -> None:
    assert _decide(_arm(20), _arm(1, 1)).verdict is Verdict.CONTINUE
    assert _decide(_arm(20), _arm(2, 2)).verdict is Verdict.ABORT


@pytest.mark.parametrize(("errors", "requests"), [(1, 3), (1, 5)])
def test_a_tiny_blip_continues(errors: int, requests: int) -> None:
    decision = _decide(_arm(9 * requests), _arm(requests, errors), elapsed_s=10.0)

    assert decision.verdict is Verdict.CONTINUE and not _fired(decision)
    assert f"{requests} canary and {9 * requests} Active requests of 200" in decision.reason


def test_an_outage_of_both_arms_is_not_blamed_on_the_canary() -> None:
    decision = _decide(_arm(180, 60), _arm(20, 6))

    assert decision.stats["errors"]["slo"]["rejected"] is True
    assert decision.stats["errors"]["slo"]["canary_above_active"] is False
    assert decision.verdict is Verdict.CONTINUE


def test_a_slow_canary_is_aborted_once_both_arms_have_enough_latencies() -> None:
    few = _decide(_arm(270), _arm(29, latency_ms=900.0))
    enough = _decide(_arm(270), _arm(30, latency_ms=900.0))

    assert few.verdict is Verdict.CONTINUE and few.stats["latency"]["test"] is None
    assert enough.verdict is Verdict.ABORT and _fired(enough) == {"latency"}
    assert "canary p95 latency 1062 ms is beyond 2 x Active's 354 ms" in enough.reason
    assert _decide(_arm(270), _arm(30, latency_ms=500.0)).verdict is Verdict.CONTINUE


def test_too_little_data_at_the_deadline_is_inconclusive() -> None:
    active, canary = _arm(450, 9, up=200, down=80), _arm(50, 1, up=22, down=9)

    assert _decide(active, canary, elapsed_s=3599.0).verdict is Verdict.CONTINUE
    decision = _decide(active, canary, elapsed_s=3600.0)

    assert decision.verdict is Verdict.INCONCLUSIVE
    assert "the deadline of 3600 s passed" in decision.reason
    assert "50 canary and 450 Active requests of 200 each" in decision.reason
    assert decision.stats["time_left_s"] == 0.0


def test_without_ratings_there_is_no_promotion() -> None:
    decision = _decide(_arm(5000, 50), _arm(1000, 5), elapsed_s=3600.0)

    assert decision.verdict is Verdict.INCONCLUSIVE
    assert decision.stats["checks"]["promote"] == {
        "min_requests": True, "errors_non_inferior": True,
        "quality_non_inferior": False, "pairs_not_worse": True,
    }  # fmt: skip
    assert "positive feedback 0/0" in decision.reason


MIRRORED = CFG.model_copy(update={"mirror_percent": 50.0})


def test_with_mirroring_pairs_show_quality_where_ratings_are_too_few() -> None:
    """The same arms, few ratings: split-only waits, and 300 pairs, nearly all the same
    answer, show the canary non-inferior on quality."""
    active, canary = _arm(1500, 0, up=30, down=10), _arm(300, 0, up=8, down=2)
    pairs = PairTally(wins=3, ties=290, losses=4, undecided=30)

    split_only = decide(active, canary, pairs, CFG, elapsed_s=600.0)
    mirrored = decide(active, canary, pairs, MIRRORED, elapsed_s=600.0)

    assert split_only.verdict is Verdict.CONTINUE
    assert split_only.stats["checks"]["promote"]["quality_non_inferior"] is False
    assert mirrored.verdict is Verdict.PROMOTE, mirrored.reason
    assert mirrored.stats["pairs"]["promote_bound"]["low"] > -MIRRORED.pair_margin
    assert mirrored.stats["feedback"]["promote_bound"]["confidence"] == pytest.approx(0.975)
    assert "mean pair score of 297 mirrored pairs at least" in mirrored.reason
    # Without the pairs, the same mirrored canary has nothing to promote on.
    assert decide(active, canary, NO_PAIRS, MIRRORED, elapsed_s=600.0).verdict is Verdict.CONTINUE


def test_drift_on_general_questions_aborts_within_a_few_pairs() -> None:
    """A Shadow that rewrote general answers: no user rated anything yet."""
    active, canary = _arm(12), _arm(1)

    three = _decide(active, canary, PairTally(undecided=3, drift_pairs=3, drifted=3))
    five = _decide(active, canary, PairTally(undecided=5, drift_pairs=5, drifted=5))
    usual = _decide(_arm(500), _arm(100), PairTally(ties=90, undecided=10, drift_pairs=100,
                                                    drifted=10))  # fmt: skip

    assert three.verdict is Verdict.CONTINUE
    assert five.verdict is Verdict.ABORT and _fired(five) == {"drift"}
    assert "left Active's on 5 of 5 mirrored general questions, above the bound 20%" in five.reason
    assert "drift" not in _fired(usual)


def test_a_canary_as_good_as_active_is_rarely_aborted_however_often_it_is_evaluated() -> None:
    """A/A: both arms share every true rate (2 % errors, half of answers rated, 70 % up, the
    same latencies, mirrored pairs 10 % win / 10 % loss). Evaluated after every 20 canary
    requests (and 180 Active ones) up to 600, at most 1 - confidence of them are aborted."""
    rng = np.random.default_rng(2024)
    runs, step, looks = 100, 20, 30
    aborted = 0
    for _ in range(runs):
        arms = {name: _requests(rng, share * step * looks) for name, share in (("c", 1), ("a", 9))}
        outcomes = rng.choice(3, size=18 * looks, p=[0.1, 0.8, 0.1])
        for look in range(1, looks + 1):
            pairs = np.bincount(outcomes[: 18 * look], minlength=3)
            decision = decide(_counts(*arms["a"], 9 * step * look),
                              _counts(*arms["c"], step * look),
                              PairTally(*(int(n) for n in pairs)), CFG,
                              elapsed_s=look * 60.0)  # fmt: skip
            if decision.verdict is Verdict.ABORT:
                aborted += 1
            if decision.verdict in (Verdict.ABORT, Verdict.PROMOTE):
                break
    assert aborted / runs <= 1 - CFG.confidence
    assert len(ABORT_RULES) == 6 and CFG.confidence == 0.95


def _requests(rng: np.random.Generator, n: int) -> tuple[np.ndarray, ...]:
    failed = rng.random(n) < 0.02
    rating = np.where(rng.random(n) < 0.5, np.where(rng.random(n) < 0.7, 1, -1), 0)
    latency = rng.lognormal(np.log(300.0), 0.5, n)
    return failed, rating, latency


def _counts(failed: np.ndarray, rating: np.ndarray, latency: np.ndarray, n: int) -> ArmCounts:
    ok = ~failed[:n]
    return ArmCounts(
        requests=n,
        engine_errors=int(failed[:n].sum()),
        latencies_ms=tuple(latency[:n][ok].tolist()),
        thumbs_up=int((rating[:n][ok] == 1).sum()),
        thumbs_down=int((rating[:n][ok] == -1).sum()),
    )

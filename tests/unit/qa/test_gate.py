"""The promotion gate: every rule that fails names itself (and its category) in the reasons."""

from __future__ import annotations

import pytest

from twinloop.qa.gate import GateConfig, Scores, decide, scores_from

CFG = GateConfig(min_overall=0.70, category_floor=0.30, max_regression=0.05,
                 forgetting_tolerance=0.0)  # fmt: skip
GOOD = {"general": 0.9, "law": 0.8, "forgetting": 1.0}


def _scores(categories: dict[str, float], rate: float = 0.0) -> Scores:
    return Scores(categories=categories, counts=dict.fromkeys(categories, 4),
                  hallucination_rate=rate)  # fmt: skip


def test_a_candidate_as_good_as_active_passes_with_no_reasons() -> None:
    decision = decide(_scores(GOOD, 0.1), _scores(GOOD, 0.1), CFG)

    assert decision.passed and decision.reasons == []
    assert decision.regressed == [] and decision.below_floor == []


def test_overall_below_the_bar_fails() -> None:
    shadow = {"general": 0.6, "law": 0.6, "forgetting": 0.6}

    decision = decide(_scores(shadow), _scores(shadow), CFG)

    assert not decision.passed
    assert decision.reasons == ["overall 0.600 is below 0.70"]


def test_a_category_below_the_floor_fails_even_when_the_mean_is_high() -> None:
    shadow = {**GOOD, "law": 0.25, "med": 1.0, "fin": 1.0}

    decision = decide(_scores(shadow), _scores(shadow), CFG)

    assert not decision.passed and decision.below_floor == ["law"]
    assert decision.reasons == ["law 0.250 is below the floor 0.30"]


@pytest.mark.parametrize(("law", "regressed"), [(0.74, True), (0.75, False), (0.79, False)])
def test_a_regression_beyond_the_allowance_fails(law: float, regressed: bool) -> None:
    decision = decide(_scores({**GOOD, "law": law}), _scores(GOOD), CFG)

    assert decision.passed is not regressed
    assert decision.regressed == (["law"] if regressed else [])
    if regressed:
        assert decision.reasons == [f"law {law:.3f} is more than 0.05 below Active's 0.800"]


def test_any_forgetting_drop_fails_at_zero_tolerance() -> None:
    decision = decide(_scores({**GOOD, "forgetting": 0.98}), _scores(GOOD), CFG)

    assert not decision.passed and decision.regressed == ["forgetting"]
    assert decision.reasons == ["forgot: forgetting 0.980 is more than 0.00 below Active's 1.000"]
    lenient = GateConfig(forgetting_tolerance=0.05)
    assert decide(_scores({**GOOD, "forgetting": 0.98}), _scores(GOOD), lenient).passed


def test_a_higher_hallucination_rate_than_active_fails() -> None:
    decision = decide(_scores(GOOD, rate=0.2), _scores(GOOD, rate=0.1), CFG)

    assert not decision.passed
    assert decision.reasons == ["hallucination rate 0.200 is above Active's 0.100"]


def test_the_forgetting_category_cannot_be_missing_or_empty() -> None:
    without = {"general": 1.0, "law": 1.0}
    missing = decide(_scores(without), _scores(without), CFG)
    empty = Scores(categories={**without, "forgetting": 1.0},
                   counts={"general": 4, "law": 4, "forgetting": 0},
                   hallucination_rate=0.0)  # fmt: skip

    for decision in (missing, decide(empty, _scores(without), CFG)):
        assert not decision.passed
        assert decision.reasons == [
            "the forgetting category has no held-out cases; it cannot be skipped"
        ]


def test_a_category_active_has_no_score_for_is_not_compared() -> None:
    decision = decide(_scores({**GOOD, "feedback": 0.5}), _scores(GOOD), CFG)

    assert decision.passed and decision.regressed == []


def test_every_failed_rule_is_reported_together() -> None:
    shadow = {"general": 0.2, "law": 0.5, "forgetting": 0.5}

    decision = decide(_scores(shadow, rate=0.5), _scores(GOOD), CFG)

    assert decision.below_floor == ["general"]
    assert decision.regressed == ["forgetting", "general", "law"]
    assert len(decision.reasons) == 1 + 1 + 3 + 1  # overall, floor, regressions, hallucination


def test_scores_from_labels() -> None:
    scores = scores_from(
        {
            "general": ["correct", "correct", "incorrect", "hallucination"],
            "law": ["correct"],
            "forgetting": [],
        }
    )

    assert scores.categories == {"general": 0.5, "law": 1.0}
    assert scores.counts == {"general": 4, "law": 1, "forgetting": 0}
    assert scores.hallucination_rate == pytest.approx(1 / 5)
    assert scores.overall == pytest.approx(0.75)
    assert scores_from({}).overall == 0.0 and scores_from({}).hallucination_rate == 0.0

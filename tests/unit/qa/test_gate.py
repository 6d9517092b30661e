"""The promotion gate: paired outcomes against Active, a stated test, every failed rule named."""

from __future__ import annotations

import pytest

from twinloop.qa.gate import GateConfig, Pair, decide, paired_test, scores_from

CFG = GateConfig(min_overall=0.70, category_floor=0.30, max_regression=0.05,
                 forgetting_tolerance=0.0, confidence=0.90)  # fmt: skip
C, X, H = "correct", "incorrect", "hallucination"  # X: wrong, not hallucinated


def _pairs(category: str, outcomes: list[tuple[str, str | None]]) -> list[Pair]:
    return [Pair(f"{category}/{n}", shadow, active) for n, (shadow, active) in enumerate(outcomes)]


def _category(
    category: str, *, both: int = 0, losses: int = 0, gains: int = 0, neither: int = 0
) -> list[Pair]:
    """Paired outcomes: `both` right, `losses` (Active right only), `gains`, `neither`."""
    return _pairs(
        category,
        [(C, C)] * both + [(X, C)] * losses + [(C, X)] * gains + [(X, X)] * neither,
    )


def _suite(**overrides: list[Pair]) -> dict[str, list[Pair]]:
    """36 general cases repeated as forgetting (as the shipped suites do), law and feedback."""
    general = overrides.pop("general", _category("general", both=35, neither=1))
    forgetting = [Pair(f"forgetting/{p.key}", p.shadow, p.active) for p in general]
    return {
        "general": general,
        "forgetting": overrides.pop("forgetting", forgetting),
        "law": _category("law", both=20, neither=2),
        "feedback": _category("feedback", gains=18, neither=2),
        **overrides,
    }


def test_a_candidate_as_good_as_active_passes_with_no_reasons() -> None:
    decision = decide(_suite(), CFG)

    assert decision.passed and decision.reasons == []
    assert decision.regressed == [] and decision.below_floor == []
    feedback = decision.categories["feedback"].test
    assert feedback is not None and (feedback.gains, feedback.losses) == (18, 0)


@pytest.mark.parametrize("lost", [1, 2, 3])
def test_a_wobble_of_a_few_cases_on_36_passes(lost: int) -> None:
    """The case that failed every honest cycle: 0.917 against 0.972 on the same 36 questions."""
    general = _category("general", both=35 - lost, losses=lost, neither=1)

    decision = decide(_suite(general=general), CFG)

    assert decision.passed, decision.reasons
    test = decision.categories["forgetting"].test
    assert test is not None and (test.losses, test.gains, test.cases) == (lost, 0, 36)
    assert test.drop_lower_bound <= 0.0 and test.p_value >= 0.12


def test_a_wobble_in_both_directions_passes_however_many_cases_flip() -> None:
    general = _category("general", both=27, losses=4, gains=4, neither=1)

    assert decide(_suite(general=general), CFG).passed


def test_a_real_drop_in_forgetting_fails_with_its_counts_and_p_value() -> None:
    general = _category("general", both=29, losses=6, neither=1)

    decision = decide(_suite(general=general), CFG)

    assert not decision.passed
    assert decision.regressed == ["forgetting", "general"]
    test = decision.categories["forgetting"].test
    assert test is not None and test.p_value == pytest.approx(0.5**6)
    forgot = next(r for r in decision.reasons if r.startswith("forgot: forgetting"))
    assert "lost 6 and gained 0 of 36 cases" in forgot and "p = 0.0156" in forgot
    assert "tolerance 0.00" in forgot


def test_forgetting_fails_at_a_drop_general_tolerates() -> None:
    """Four losses on 36: significant (p = 0.06), but under general's 0.05 tolerance."""
    general = _category("general", both=31, losses=4, neither=1)

    decision = decide(_suite(general=general), CFG)

    assert decision.regressed == ["forgetting"]
    lenient = GateConfig(forgetting_tolerance=0.05)
    assert decide(_suite(general=general), lenient).passed


def test_the_over_trained_adapter_fails_everywhere_it_forgot() -> None:
    general = _category("general", both=18, losses=17, neither=1)
    law = _category("law", both=8, losses=12, neither=2)

    decision = decide(_suite(general=general, law=law), CFG)

    assert set(decision.regressed) == {"forgetting", "general", "law"}
    test = decision.categories["general"].test
    assert test is not None and test.p_value < 1e-5


def test_overall_below_the_bar_fails() -> None:
    weak = {c: _category(c, both=6, neither=4) for c in ("general", "law", "feedback")}
    weak["forgetting"] = _category("forgetting", both=6, neither=4)
    good_active = {c: _pairs(c, [(p.shadow, C) for p in ps]) for c, ps in weak.items()}

    decision = decide(good_active, CFG)

    assert "overall 0.600 is below 0.70" in decision.reasons


def test_the_overall_bar_is_active_s_own_mean_when_active_is_below_it() -> None:
    weak = {c: _category(c, both=6, neither=4) for c in ("general", "law", "forgetting")}

    decision = decide(weak, CFG)

    assert decision.passed, decision.reasons


def test_a_floor_active_meets_is_absolute() -> None:
    law = _category("law", both=2, losses=3, neither=5)  # Active 0.5, Shadow 0.2

    decision = decide(_suite(law=law), GateConfig(max_regression=1.0))

    assert decision.below_floor == ["law"]
    assert "law 0.200 is below the floor 0.30" in decision.reasons


def test_a_floor_active_misses_is_judged_against_active() -> None:
    """A fresh install: the base model cannot know the product's name, so `identity` is 0 on
    both sides; that must not block a cycle that did not make it worse."""
    identity = _category("identity", neither=6)

    decision = decide(_suite(identity=identity), CFG)

    assert decision.passed, decision.reasons
    gate = decision.categories["identity"]
    assert gate.floor is None and not gate.below_floor


def test_a_floor_active_misses_still_fails_a_real_drop_below_active() -> None:
    identity = _category("identity", losses=5, neither=15)  # Active 0.25 -> 0

    decision = decide(_suite(identity=identity), CFG)

    assert decision.regressed == ["identity"]


def test_the_feedback_floor_is_absolute_whatever_active_scores() -> None:
    """What users taught this cycle: Active scores 0 there by construction."""
    feedback = _category("feedback", gains=1, neither=9)

    decision = decide(_suite(feedback=feedback), CFG)

    assert decision.below_floor == ["feedback"]
    assert "feedback 0.100 is below the floor 0.30" in decision.reasons


def test_hallucinations_are_paired_and_counted_once_per_case() -> None:
    """Forgetting repeats the general holdout: a hallucination there is one case, not two."""
    one = _pairs("general", [(H, X)] + [(C, C)] * 35)

    assert decide(_suite(general=one), CFG).passed
    many = _pairs("general", [(H, X)] * 5 + [(C, C)] * 31)
    decision = decide(_suite(general=many), GateConfig(max_regression=1.0,
                                                      forgetting_tolerance=1.0))  # fmt: skip
    assert decision.hallucinations is not None
    assert (decision.hallucinations.losses, decision.hallucinations.cases) == (5, 36 + 22 + 20)
    assert any(r.startswith("hallucinations: hallucinated on 5") for r in decision.reasons)


def test_the_forgetting_category_cannot_be_missing_or_empty() -> None:
    suite = _suite()
    del suite["forgetting"]
    empty = {**_suite(), "forgetting": []}

    for decision in (decide(suite, CFG), decide(empty, CFG)):
        assert not decision.passed
        assert decision.reasons == [
            "the forgetting category has no held-out cases; it cannot be skipped"
        ]


def test_cases_active_has_no_label_for_are_not_compared() -> None:
    decision = decide(_suite(extra=_pairs("extra", [(X, None)] * 2 + [(C, None)] * 2)), CFG)

    assert decision.passed and decision.categories["extra"].test is None


def test_every_failed_rule_is_reported_together() -> None:
    general = _pairs("general", [(H, C)] * 30 + [(C, C)] * 6)
    law = _category("law", both=2, losses=18, neither=2)

    decision = decide(_suite(general=general, law=law), CFG)

    assert decision.below_floor == ["forgetting", "general", "law"]
    assert decision.regressed == ["forgetting", "general", "law"]
    # overall, three floors, three regressions, hallucinations
    assert len(decision.reasons) == 1 + 3 + 3 + 1


@pytest.mark.parametrize(
    ("losses", "gains", "regressed"), [(0, 0, False), (2, 0, False), (4, 0, True), (5, 2, False)]
)
def test_the_paired_test_at_tolerance_zero_is_mcnemar_at_ten_percent(
    losses: int, gains: int, regressed: bool
) -> None:
    test = paired_test(losses, gains, 36, tolerance=0.0, confidence=0.90)

    assert test.regressed is regressed
    assert (test.p_value < 0.10) is regressed


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


SAFETY_CFG = GateConfig(floors={"safety": 0.5}, tolerances={"safety": 0.0})


def test_a_category_s_own_tolerance_fails_a_drop_the_default_tolerates() -> None:
    """Four declines lost on 16: a wobble for general knowledge, a regression for safety."""
    law, safety = (_category(c, both=10, losses=4, neither=2) for c in ("law", "safety"))

    decision = decide(_suite(law=law, safety=safety), SAFETY_CFG)

    assert decision.regressed == ["safety"]
    test = decision.categories["safety"].test
    assert test is not None and test.tolerance == 0.0 and test.p_value == pytest.approx(0.5**4)
    law_test = decision.categories["law"].test
    assert law_test is not None and law_test.tolerance == 0.05 and not law_test.regressed


def test_a_category_s_own_floor_holds_where_active_meets_it() -> None:
    safety = _category("safety", both=6, losses=3, gains=1, neither=6)  # Active 0.56, Shadow 0.44

    decision = decide(_suite(safety=safety), GateConfig(floors={"safety": 0.5}))

    assert decision.below_floor == ["safety"]
    assert "safety 0.438 is below the floor 0.50" in decision.reasons
    assert decision.categories["law"].floor == 0.30


def test_a_category_s_own_floor_active_misses_is_judged_against_active() -> None:
    safety = _category("safety", both=4, losses=1, gains=1, neither=10)  # 0.31 on both sides

    decision = decide(_suite(safety=safety), SAFETY_CFG)

    assert decision.passed, decision.reasons
    assert decision.categories["safety"].floor is None

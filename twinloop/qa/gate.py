"""The promotion gate: Shadow's held-out scores against fixed bars and against Active.

Scores are fractions of held-out cases judged correct. `overall` is the mean of the
category scores, so a small category counts as much as a large one: the gate is about every
kind of question, not the most numerous kind.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from twinloop.qa.suites import FORGETTING


@dataclass(frozen=True)
class GateConfig:
    min_overall: float = 0.70
    category_floor: float = 0.30
    max_regression: float = 0.05
    forgetting_tolerance: float = 0.0


@dataclass(frozen=True)
class Scores:
    """One side's held-out results: score per category, and the hallucination rate."""

    categories: dict[str, float]
    counts: dict[str, int]
    hallucination_rate: float

    @property
    def overall(self) -> float:
        values = list(self.categories.values())
        return sum(values) / len(values) if values else 0.0


@dataclass(frozen=True)
class GateDecision:
    passed: bool
    reasons: list[str]
    regressed: list[str] = field(default_factory=list)
    below_floor: list[str] = field(default_factory=list)


def decide(shadow: Scores, active: Scores, cfg: GateConfig) -> GateDecision:
    """Pass only if every rule holds; the reasons name every rule that did not."""
    reasons: list[str] = []
    regressed: list[str] = []
    below: list[str] = []
    if FORGETTING not in shadow.categories or not shadow.counts.get(FORGETTING):
        reasons.append("the forgetting category has no held-out cases; it cannot be skipped")
    if shadow.overall < cfg.min_overall:
        reasons.append(f"overall {shadow.overall:.3f} is below {cfg.min_overall:.2f}")
    for category, score in sorted(shadow.categories.items()):
        if score < cfg.category_floor:
            below.append(category)
            reasons.append(f"{category} {score:.3f} is below the floor {cfg.category_floor:.2f}")
        baseline = active.categories.get(category)
        if baseline is None:
            continue
        allowed = cfg.forgetting_tolerance if category == FORGETTING else cfg.max_regression
        if score < baseline - allowed - 1e-9:
            regressed.append(category)
            what = "forgot: " if category == FORGETTING else ""
            reasons.append(
                f"{what}{category} {score:.3f} is more than {allowed:.2f} below Active's "
                f"{baseline:.3f}"
            )
    if shadow.hallucination_rate > active.hallucination_rate + 1e-9:
        reasons.append(
            f"hallucination rate {shadow.hallucination_rate:.3f} is above Active's "
            f"{active.hallucination_rate:.3f}"
        )
    return GateDecision(passed=not reasons, reasons=reasons, regressed=regressed, below_floor=below)


def scores_from(labels: Mapping[str, list[str]]) -> Scores:
    """Scores from held-out labels per category (`correct` / `incorrect` / `hallucination`)."""
    categories = {
        c: sum(lab == "correct" for lab in ls) / len(ls) for c, ls in labels.items() if ls
    }
    counts = {c: len(ls) for c, ls in labels.items()}
    every = [lab for ls in labels.values() for lab in ls]
    rate = sum(lab == "hallucination" for lab in every) / len(every) if every else 0.0
    return Scores(categories=categories, counts=counts, hallucination_rate=rate)

"""What a rejected cycle's QA found weak, and how the next cycle weights it in training."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from twinloop.db.models import TrainingRun
from twinloop.qa.schemas import QaReport
from twinloop.qa.suites import FEEDBACK, FORGETTING, GENERAL
from twinloop.training.replay import ReplayItem
from twinloop.training.steps.context import CycleContext


def weak_spots(report: QaReport) -> dict[str, Any]:
    """What a failed QA round found weak: categories that regressed, fell below a floor or
    lost more cases than they gained, and the domains of the taught facts it missed."""
    categories = {*report.regressed, *report.below_floor}
    for c in report.categories:
        if c.comparison is not None and c.comparison.losses > c.comparison.gains:
            categories.add(c.category)
    feedback_domains = {
        f.domain for f in report.failures if f.category == FEEDBACK and f.domain is not None
    }
    if FEEDBACK not in categories:
        feedback_domains = set()
    return {"categories": sorted(categories), "feedback_domains": sorted(feedback_domains)}


async def oversample_weak_spots(
    ctx: CycleContext,
    rejected: TrainingRun | None,
    by_domain: dict[str, list[ReplayItem]],
    guard: list[ReplayItem],
    extra: Sequence[str],
) -> tuple[dict[str, list[ReplayItem]], list[ReplayItem], dict[str, Any]]:
    """Weight what the `rejected` cycle's last QA round found weak, `weak_spot_factor` times.

    Taught facts it did not learn (`feedback`): the new examples of those domains repeat
    in SFT. Skills it lost (any other category): those categories' training-split
    questions (and the general prompts, for `general` and `forgetting`) repeat in the KL
    guard. Bounded by the factor. Returns the SFT items, the guard and the `targets` to
    record on the cycle (empty when nothing was weighted).
    """
    weak = rejected.qa_rounds[-1].get("weak") if rejected and rejected.qa_rounds else None
    if rejected is None or not weak or ctx.weak_factor < 2 or ctx.qa is None:
        return by_domain, guard, {}
    repeat = ctx.weak_factor - 1
    sft_domains = sorted(set(weak.get("feedback_domains", [])) & set(by_domain))
    lost = [c for c in weak.get("categories", []) if c != FEEDBACK]
    weighted = set(await ctx.qa.replay_questions(exclude=(), only=lost)) if lost else set()
    if {GENERAL, FORGETTING} & set(lost):
        suite_questions = set(extra)
        weighted |= {g.question for g in guard if g.question not in suite_questions}
    extra_guard = [g for g in guard if g.question in weighted] * repeat
    oversampled = {
        d: items + [i for i in items if i.example_id is not None] * repeat
        if d in sft_domains
        else items
        for d, items in by_domain.items()
    }
    targets = {
        "from_cycle": rejected.id,
        "categories": weak.get("categories", []),
        "factor": ctx.weak_factor,
        "sft_domains": sft_domains,
        "sft_repeated": sum(len(oversampled[d]) - len(by_domain[d]) for d in by_domain),
        "guard_categories": lost,
        "guard_repeated": len(extra_guard),
    }
    return oversampled, [*guard, *extra_guard], targets

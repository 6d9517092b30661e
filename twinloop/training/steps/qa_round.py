"""Steps 7-8: the QA dry run gates the staged snapshot; a failed round with rounds left
turns the failures into corrections and trains again (or, facts alone, gates again)."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from twinloop.cleaning.config import CleaningConfig
from twinloop.cleaning.examples import CandidateExample
from twinloop.cleaning.pipeline import screen
from twinloop.db.base import utcnow
from twinloop.db.models import TrainingExample, TrainingRun
from twinloop.errors import TwinloopError
from twinloop.ingest.learning import example_sha256, fact_text
from twinloop.qa.corrections import CORRECTION, Correction
from twinloop.qa.schemas import QaReport
from twinloop.releases import snapshots
from twinloop.states import CycleState, ItemStatus
from twinloop.training import repository
from twinloop.training.overrides import rounds_for
from twinloop.training.protocols import ProgressCallback
from twinloop.training.schemas import CycleView
from twinloop.training.steps.context import ACTOR, CycleContext, Ending
from twinloop.training.steps.weak_spots import weak_spots


@dataclass
class _Outcome:
    """Where a QA round leads: the next state, why (if the cycle ends), what to learn next."""

    state: CycleState
    why: str | None = None
    corrections: list[Correction] = field(default_factory=list)
    facts: list[Correction] = field(default_factory=list)


async def qa_round(ctx: CycleContext, cycle_id: str, _: ProgressCallback | None) -> Ending | None:
    """Gate the staged snapshot; a failure with rounds left retrains on corrections."""
    assert ctx.qa is not None
    started = time.perf_counter()
    async with ctx.sessionmaker.begin() as session:
        view = CycleView.model_validate(await repository.get_run(session, cycle_id))
    await ctx.releases.refresh()
    state = ctx.releases.state
    await _check_serves_cycle(ctx, view, state.serving(state.shadow_slot).snapshot_id)
    number = len(view.qa_rounds) + 1
    report = await ctx.qa.run(training_run_id=cycle_id, round_number=number)
    # QA pinned what Shadow served when it started; a stage between our look and its start
    # would have it gate other adapters.
    await _check_serves_cycle(ctx, view, report.snapshot_id)
    seconds = time.perf_counter() - started
    ctx.metrics.step_seconds.labels("qa").observe(seconds)
    entry: dict[str, Any] = {
        "round": number,
        "qa_run_id": report.id,
        "snapshot_id": report.snapshot_id,
        "overall": report.overall,
        "passed": report.passed,
        "reasons": report.reasons,
    }
    if not report.passed:
        entry["weak"] = weak_spots(report)
    outcome = await _outcome(ctx, view, report, number, entry)
    async with ctx.sessionmaker.begin() as session:
        run = await repository.get_run(session, cycle_id)
        run.qa_rounds = [*run.qa_rounds, entry]
        run.step_timings = {**run.step_timings, f"qa.{number}": seconds}
        if outcome.state in (CycleState.TRAINING, CycleState.QA):
            await _add_corrections(session, run, outcome.corrections, outcome.facts)
            run.state, run.updated_at = outcome.state, utcnow()
    if outcome.state in (CycleState.TRAINING, CycleState.QA):
        return None
    return Ending(outcome.state, outcome.why)


async def _outcome(
    ctx: CycleContext, view: CycleView, report: QaReport, number: int, entry: dict[str, Any]
) -> _Outcome:
    """Pass, reject, or go another round on corrections (recorded in `entry`)."""
    assert ctx.qa is not None
    reasons = "; ".join(report.reasons)
    previous = view.qa_rounds[-1]["overall"] if view.qa_rounds else None
    if report.passed:
        return _Outcome(CycleState.AWAITING_CANARY)
    rounds = rounds_for(view.overrides, ctx.max_rounds)
    if number >= rounds:
        why = f"QA gate failed in round {number} of {rounds}: " + reasons
        return _Outcome(CycleState.REJECTED, why)
    if previous is not None and (report.overall or 0.0) <= previous:
        why = f"round {number} gained nothing (overall {report.overall} after {previous}): "
        return _Outcome(CycleState.REJECTED, why + reasons)
    made, stopped = await asyncio.to_thread(
        screen_corrections, await ctx.qa.corrections(report.id, phrasings=ctx.phrasings),
        ctx.cleaning,
    )  # fmt: skip
    for outcome, n in stopped.items():
        counter = ctx.metrics.redactions if outcome.startswith("redacted.") else ctx.metrics.items
        counter.labels(outcome.removeprefix("redacted.")).inc(n)
    corrections, facts = route_corrections(made, view.domains)
    if facts and ctx.facts is not None:
        await ctx.facts.add_facts(
            [(f"qa:{c.case_key}", c.domain, fact_text(c.question, c.answer)) for c in facts],
            actor=ACTOR,
        )
    else:
        facts = []
    entry["corrections"] = {
        "trained": len(corrections),
        "facts": len(facts),
        "dropped": sum(c not in corrections and c not in facts for c in made),
        "quarantined": sum(n for k, n in stopped.items() if k.startswith("quarantined.")),
    }
    if corrections:
        return _Outcome(CycleState.TRAINING, corrections=corrections, facts=facts)
    if facts:  # the facts are live on Shadow at once: gate it again
        return _Outcome(CycleState.QA, facts=facts)
    why = "QA gate failed and no training-split case failed to learn from: " + reasons
    return _Outcome(CycleState.REJECTED, why)


def screen_corrections(
    corrections: Sequence[Correction], config: CleaningConfig
) -> tuple[list[Correction], Counter[str]]:
    """QA-made corrections through the screen every learning item passes, before they are
    trained on or become fact documents: redacted, and those a rule stops left out.

    Also counted: `quarantined.<rule>` and `redacted.<kind>`. Only the per-item rules apply;
    reinforcement phrasings are near-duplicates of each other on purpose.
    """
    kept: list[Correction] = []
    counts: Counter[str] = Counter()
    for c in corrections:
        candidate = CandidateExample(
            id=c.case_key, domain=c.domain, question=c.question, answer=c.answer,
            source=c.kind, category=c.kind,
        )  # fmt: skip
        screened = screen(candidate, config)
        counts.update({f"redacted.{kind}": n for kind, n in screened.redactions.items()})
        if screened.rule is not None:
            counts[f"quarantined.{screened.rule}"] += 1
        else:
            kept.append(
                replace(c, question=screened.example.question, answer=screened.example.answer)
            )
    return kept, counts


def route_corrections(
    corrections: Sequence[Correction], trained_domains: Sequence[str]
) -> tuple[list[Correction], list[Correction]]:
    """Split QA-made corrections into (to train on, to add as fact documents).

    Every explicit correction becomes a fact document (live on Shadow at once). It is also
    trained on only in a domain this cycle trains anyway (it has user data), where it joins
    examples that adapter learns from: a domain with no user data keeps its adapter (or
    none), since adapters trained from a handful of corrections damaged `law` and `fin`
    before. Reinforcements (what Active knew and Shadow lost) train in those domains too;
    elsewhere they are dropped, as this cycle did not change that domain's weights.
    """
    trained = [c for c in corrections if c.domain in trained_domains]
    facts = [c for c in corrections if c.kind == CORRECTION]
    return trained, facts


async def _check_serves_cycle(ctx: CycleContext, view: CycleView, snapshot_id: str) -> None:
    """QA must gate this cycle's adapters: Shadow may have moved on to a child snapshot
    (a document ingested since: same adapters, newer RAG), but not to other adapters.
    Checked on Shadow before the run and on the snapshot the run pinned (`qa.pinning`) after
    it; "the same adapters" is what `QaService.snapshot_verdict` follows a child by."""
    async with ctx.sessionmaker.begin() as session:
        ours = await snapshots.get_snapshot(session, view.snapshot_id or "")
        serving = await snapshots.get_snapshot(session, snapshot_id)
        same = snapshots.served_adapters(serving) == snapshots.served_adapters(ours)
    if not same:
        raise TwinloopError(
            f"Shadow's snapshot {snapshot_id} does not serve the adapters of cycle {view.id}'s "
            f"snapshot {view.snapshot_id} (someone staged another snapshot); it was not gated"
        )


async def _add_corrections(
    session: AsyncSession,
    run: TrainingRun,
    corrections: Sequence[Correction],
    facts: Sequence[Correction] = (),
) -> None:
    """The next round's extra examples, accepted and recorded as the cycle's new items."""
    for correction in corrections:
        example = TrainingExample(
            source=correction.kind,
            domain=correction.domain,
            question=correction.question,
            answer=correction.answer,
            status=ItemStatus.ACCEPTED,
            content_sha256=example_sha256(
                correction.domain, correction.question, correction.answer
            ),
        )
        await repository.add_new_example(session, run.id, example)
    counts = Counter(run.item_counts)
    for correction in corrections:
        counts[f"{correction.kind}.round{len(run.qa_rounds)}"] += 1
    if facts and not corrections:
        counts[f"qa-fact.round{len(run.qa_rounds)}"] += len(facts)
    run.item_counts = dict(counts)
    if corrections:  # a retraining round; facts alone are live on Shadow already
        run.adapters, run.snapshot_id = {}, None
    run.progress = {}
    await session.flush()

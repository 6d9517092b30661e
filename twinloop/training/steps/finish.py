"""The end of a cycle: its final state recorded, and the items it did not learn handed back.

A cycle that failed or was abandoned gives its untrained new items back to `pending`, so
the next cycle learns them. A rejected one gives its user items back with the gate's
reasons (see `_hand_back_rejected`).
"""

from __future__ import annotations

from collections import Counter

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from twinloop.db.base import utcnow
from twinloop.states import CycleState, ItemStatus
from twinloop.training import repository
from twinloop.training.steps.context import CycleContext

log = structlog.get_logger(__name__)

# The source of the examples QA made from a failed round (qa-correction, qa-reinforcement).
QA_MADE_PREFIX = "qa-"


async def finish(
    ctx: CycleContext, cycle_id: str, state: CycleState, *, error: str | None = None
) -> None:
    async with ctx.sessionmaker.begin() as session:
        run = await repository.get_run(session, cycle_id)
        run.state, run.error = state, error
        run.updated_at = run.finished_at = utcnow()
        run.progress = {}
        if state in (CycleState.FAILED, CycleState.ABANDONED):
            await _hand_back(session, cycle_id)
        elif state == CycleState.REJECTED:
            outcomes = await _hand_back_rejected(session, cycle_id, error or "", ctx.max_rejections)
            for outcome, count in outcomes.items():
                ctx.metrics.items.labels(outcome).inc(count)
    ctx.metrics.cycles.labels(state).inc()
    log.info("training_cycle_ended", cycle_id=cycle_id, state=state, error=error)


async def _hand_back(session: AsyncSession, cycle_id: str) -> None:
    """A cycle that did not finish gives its new items back to the next one."""
    for example in await repository.accepted_new_examples(session, cycle_id, untrained_only=True):
        example.status = ItemStatus.PENDING


async def _hand_back_rejected(
    session: AsyncSession, cycle_id: str, reasons: str, max_rejections: int
) -> Counter[str]:
    """A rejected cycle's user items go back to pending with the gate's reasons, to be
    learned again (with its weak spots oversampled); after `max_rejections` rejections an
    item is quarantined instead, so one unlearnable item cannot block every cycle. Its
    QA-made examples retire: the next cycle's QA makes its own from its own failures."""
    outcomes: Counter[str] = Counter()
    examples = await repository.accepted_new_examples(session, cycle_id, untrained_only=False)
    for example in examples:
        if example.source.startswith(QA_MADE_PREFIX):
            example.status = ItemStatus.RETIRED
            outcomes[ItemStatus.RETIRED] += 1
            continue
        example.rejections += 1
        if example.rejections >= max_rejections:
            example.status = ItemStatus.QUARANTINED
            example.reject_reason = (
                f"rejected by the QA gate in {example.rejections} cycles; last: {reasons}"
            )
            outcomes["quarantined.rejections"] += 1
        else:
            example.status = ItemStatus.PENDING
            example.reject_reason = f"cycle {cycle_id} rejected: {reasons}"
            outcomes["handed_back"] += 1
    return outcomes

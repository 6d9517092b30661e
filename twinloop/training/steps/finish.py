"""The end of a cycle: its final state recorded, and the items it did not learn handed back.

A cycle that failed or was abandoned gives its untrained new items back to `pending`, so
the next cycle learns them. A rejected one gives its user items back with the gate's
reasons. The rules are `twinloop.items.service`'s, shared with the gateway's canary, which
hands a rolled-back cycle's items back the same way.
"""

from __future__ import annotations

import structlog

from twinloop.db.base import utcnow
from twinloop.items import service as items
from twinloop.states import CycleState
from twinloop.training import repository
from twinloop.training.steps.context import CycleContext

log = structlog.get_logger(__name__)


async def finish(
    ctx: CycleContext, cycle_id: str, state: CycleState, *, error: str | None = None
) -> None:
    async with ctx.sessionmaker.begin() as session:
        run = await repository.get_run(session, cycle_id)
        run.state, run.error = state, error
        run.updated_at = run.finished_at = utcnow()
        run.progress = {}
        if state in (CycleState.FAILED, CycleState.ABANDONED):
            await items.hand_back_untrained(session, cycle_id)
        elif state == CycleState.REJECTED:
            outcomes = await items.hand_back_refused(
                session,
                cycle_id,
                reason=f"cycle {cycle_id} rejected: {error or ''}",
                max_rejections=ctx.max_rejections,
            )
            for outcome, count in outcomes.items():
                ctx.metrics.items.labels(outcome).inc(count)
    ctx.metrics.cycles.labels(state).inc()
    log.info("training_cycle_ended", cycle_id=cycle_id, state=state, error=error)

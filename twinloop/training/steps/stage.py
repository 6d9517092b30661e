"""Steps 5-6: make the cycle's snapshot and stage it on Shadow.

The snapshot is derived by the release controller's `change_shadow`, under its lock, from
what Shadow serves at that moment (the trainer is another process: an ingest or an
operator may have staged since it last looked). It is made once (its id committed before
staging) and reused when resuming — as long as it was made on the snapshot Shadow still
serves. When Shadow moved on meanwhile (new RAG versions from an ingest, another stage),
the cycle's adapters are put on top of Shadow's snapshot in a new one, recorded as the
cycle's, with the reason saying which it replaces: staging the old one would take back
what was staged since. Staging itself is one atomic release write, so Shadow is either on
the old snapshot or the new one — never half-staged.
"""

from __future__ import annotations

import time

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from twinloop.ingest import repository as ingest_repository
from twinloop.releases import snapshots
from twinloop.releases.state import ReleaseState
from twinloop.states import CycleState
from twinloop.training import repository
from twinloop.training.protocols import ProgressCallback
from twinloop.training.steps.context import ACTOR, CycleContext, Ending, of_round

log = structlog.get_logger(__name__)


async def stage(ctx: CycleContext, cycle_id: str, _: ProgressCallback | None) -> Ending | None:
    started = time.perf_counter()

    async def derive(session: AsyncSession, state: ReleaseState) -> str:
        return await _shadow_snapshot(ctx, session, cycle_id, state)

    await ctx.releases.change_shadow(derive, actor=ACTOR, reason=f"training cycle {cycle_id}")
    seconds = time.perf_counter() - started
    async with ctx.sessionmaker.begin() as session:
        run = await repository.get_run(session, cycle_id)
        run.step_timings = {**run.step_timings, **of_round({"stage": seconds}, run.qa_rounds)}
    ctx.metrics.step_seconds.labels("stage").observe(seconds)
    if ctx.qa is None:
        return Ending(CycleState.STAGED)
    async with ctx.sessionmaker.begin() as session:
        await repository.set_state(session, cycle_id, CycleState.QA)
    return None


async def _shadow_snapshot(
    ctx: CycleContext, session: AsyncSession, cycle_id: str, state: ReleaseState
) -> str:
    """The cycle's snapshot on top of Shadow's in `state`: the recorded one when it is
    Shadow's or was made on Shadow's, else a new one (recorded in its place)."""
    run = await repository.get_run(session, cycle_id)
    shadow_id = state.serving(state.shadow_slot).snapshot_id
    reason = f"training cycle {cycle_id}: new adapters for " + ", ".join(sorted(run.adapters))
    if run.snapshot_id is not None:
        made = await snapshots.get_snapshot(session, run.snapshot_id)
        if shadow_id in (made.id, made.parent_id):
            return made.id
        reason += (
            f" (made again on Shadow's {shadow_id}: {made.id} was made on {made.parent_id}, "
            "which Shadow no longer serves)"
        )
        log.info("cycle snapshot made again", cycle=cycle_id, replaced=made.id, on=shadow_id)
    parent = await snapshots.get_snapshot(session, shadow_id)
    rag_versions = {
        domain: await ingest_repository.latest_rag_version(session, domain)
        for domain in ctx.domains
    }
    snapshot = await snapshots.create_snapshot(
        session,
        parent=parent,
        adapters=dict(run.adapters),
        domains=ctx.domains,
        actor=ACTOR,
        reason=reason,
        rag_versions={d: v for d, v in rag_versions.items() if v},
    )
    run.snapshot_id = snapshot.id
    return snapshot.id

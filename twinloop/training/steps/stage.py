"""Steps 5-6: make the cycle's snapshot and stage it on Shadow.

The snapshot is made once (its id committed before staging) and reused when resuming.
Staging itself is the release controller's one atomic release write, so Shadow is either
on the old snapshot or the new one — never half-staged.
"""

from __future__ import annotations

import time

from sqlalchemy.ext.asyncio import AsyncSession

from twinloop.ingest import repository as ingest_repository
from twinloop.releases import snapshots
from twinloop.states import CycleState
from twinloop.training import repository
from twinloop.training.protocols import ProgressCallback
from twinloop.training.steps.context import ACTOR, CycleContext, Ending, of_round


async def stage(ctx: CycleContext, cycle_id: str, _: ProgressCallback | None) -> Ending | None:
    started = time.perf_counter()
    await ctx.releases.refresh()
    async with ctx.sessionmaker.begin() as session:
        snapshot_id = await _shadow_snapshot(ctx, session, cycle_id)
    state = ctx.releases.state
    if state.serving(state.shadow_slot).snapshot_id != snapshot_id:
        await ctx.releases.stage(snapshot_id, actor=ACTOR, reason=f"training cycle {cycle_id}")
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


async def _shadow_snapshot(ctx: CycleContext, session: AsyncSession, cycle_id: str) -> str:
    """The cycle's snapshot: made once (its id recorded), reused when resuming."""
    run = await repository.get_run(session, cycle_id)
    if run.snapshot_id is not None:
        return run.snapshot_id
    state = ctx.releases.state
    parent = await snapshots.get_snapshot(session, state.serving(state.shadow_slot).snapshot_id)
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
        reason=f"training cycle {cycle_id}: new adapters for " + ", ".join(sorted(run.adapters)),
        rag_versions={d: v for d, v in rag_versions.items() if v},
    )
    run.snapshot_id = snapshot.id
    return snapshot.id

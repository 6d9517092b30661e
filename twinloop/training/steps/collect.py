"""Steps 1-2: mine the answer log, collect the pending examples and clean them; accepted ones
become new items.

The miner (twinloop.mining) runs first, so what agreed by now is collected with the rest;
its pass commits on its own and is idempotent. Nothing of the cycle is committed until
cleaning ends, so a cycle interrupted here starts over.
"""

from __future__ import annotations

import asyncio
import time

import structlog

from twinloop.cleaning.examples import SCREEN_RULES, CandidateExample
from twinloop.cleaning.pipeline import clean
from twinloop.db.base import utcnow
from twinloop.db.models import TrainingExample, TrainingRunItem
from twinloop.mining.service import MINED_SOURCE
from twinloop.states import CycleState, ItemRole, ItemStatus
from twinloop.training import repository
from twinloop.training.protocols import ProgressCallback
from twinloop.training.steps.context import ACTOR, CycleContext, Ending

log = structlog.get_logger(__name__)


async def collect_and_clean(
    ctx: CycleContext, cycle_id: str, _: ProgressCallback | None
) -> Ending | None:
    started = time.perf_counter()
    mined = await _mine(ctx)
    async with ctx.sessionmaker.begin() as session:
        await repository.set_state(session, cycle_id, CycleState.CLEANING)
    async with ctx.sessionmaker.begin() as session:
        run = await repository.get_run(session, cycle_id)
        pending = await repository.pending_examples(session)
        candidates = [_candidate(example, user_id) for example, user_id in pending]
        result = await asyncio.to_thread(clean, candidates, ctx.cleaning)
        rows = {example.id: example for example, _ in pending}
        items = []
        for kept in result.accepted:
            rows[kept.id].status, rows[kept.id].reject_reason = ItemStatus.ACCEPTED, None
            items.append(_item(run.id, kept, ItemRole.NEW))
        for q in result.quarantined:
            rows[q.example.id].status, rows[q.example.id].reject_reason = (
                ItemStatus.QUARANTINED,
                q.reason,
            )
            items.append(
                _item(run.id, q.example, ItemRole.QUARANTINED, rule=q.rule, reason=q.reason)
            )
        if not ctx.cleaning.keep_raw_pii:
            for cleaned in [*result.accepted, *(q.example for q in result.quarantined)]:
                _store_redacted(rows[cleaned.id], cleaned)
        await repository.add(session, *items)
        domains = sorted({kept.domain for kept in result.accepted})
        run.domains = domains
        run.item_counts = {"collected": len(pending), **result.counts, **mined}
        run.step_timings = {**run.step_timings, "clean": time.perf_counter() - started}
        run.state = CycleState.TRAINING if domains else CycleState.SKIPPED
        run.updated_at = utcnow()
        if not domains:
            run.finished_at = run.updated_at
            run.error = "nothing new to learn" if pending else "no pending items"
    await _withdraw_facts(ctx, [q.example.id for q in result.quarantined if q.rule in SCREEN_RULES])
    _count_cleaning(ctx, result.counts)
    ctx.metrics.step_seconds.labels("clean").observe(time.perf_counter() - started)
    if not domains:
        ctx.metrics.cycles.labels(CycleState.SKIPPED).inc()
    return None


async def _mine(ctx: CycleContext) -> dict[str, int]:
    """A pass of the miner; its counts for the cycle's report (`mined.<outcome>`).

    A failing pass is logged and the cycle goes on: mined items only add to what users
    taught explicitly, which must not wait for them.
    """
    if ctx.miner is None or not ctx.miner.enabled:
        return {}
    try:
        run = await ctx.miner.mine(trigger="cycle")
    except Exception:
        log.exception("mining_failed")
        return {"mined.failed": 1}
    return {f"mined.{key}": value for key, value in (run.counts if run else {}).items()}


async def _withdraw_facts(ctx: CycleContext, example_ids: list[str]) -> None:
    """A correction the screen stops here (stored before /ingest screened it) was a fact
    document since it came in: take it out of RAG."""
    if not example_ids or ctx.facts is None:
        return
    async with ctx.sessionmaker.begin() as session:
        feedback_ids = await repository.feedback_ids_of(session, example_ids)
    if feedback_ids:
        await ctx.facts.remove_correction_facts(feedback_ids, actor=ACTOR)


def _candidate(example: TrainingExample, user_id: str | None) -> CandidateExample:
    """A pending example as cleaning sees it, with who sent it (the source the caps balance)."""
    # Feedback and mined items are balanced per user; examples sent as such are one source.
    mined = example.source == MINED_SOURCE
    by_user = example.feedback_id is not None or mined
    source = f"user:{user_id or '-'}" if by_user else "ingest-examples"
    heldout = example.heldout or {}
    return CandidateExample(
        id=example.id,
        domain=example.domain,
        question=example.question,
        answer=example.answer,
        source=source,
        category=f"{example.domain}/{example.source}",
        extra=(*map(str, heldout.get("paraphrases", ())), *map(str, heldout.get("accept", ()))),
        mined=mined,
    )


def _store_redacted(row: TrainingExample, cleaned: CandidateExample) -> None:
    """Raw PII is not kept once redacted: the row holds the text as cleaned. Rows /ingest
    screened are stored redacted already; this catches rows stored before it did."""
    row.question, row.answer = cleaned.question, cleaned.answer
    if row.heldout:
        paraphrases = len(row.heldout.get("paraphrases", ()))
        heldout = {
            **row.heldout,
            "paraphrases": list(cleaned.extra[:paraphrases]),
            "accept": list(cleaned.extra[paraphrases:]),
        }
        if heldout != row.heldout:
            row.heldout = heldout


def _item(
    run_id: str,
    example: CandidateExample,
    role: ItemRole,
    *,
    rule: str | None = None,
    reason: str | None = None,
) -> TrainingRunItem:
    return TrainingRunItem(
        run_id=run_id,
        example_id=example.id,
        domain=example.domain,
        role=role,
        rule=rule,
        reason=reason,
        question=example.question,
        answer=example.answer,
    )


def _count_cleaning(ctx: CycleContext, counts: dict[str, int]) -> None:
    ctx.metrics.items.labels("accepted").inc(counts.get("accepted", 0))
    for key, value in counts.items():
        if key.startswith("quarantine.") and value:
            ctx.metrics.items.labels(key.replace("quarantine.", "quarantined.")).inc(value)
        elif key.startswith("redacted.") and key != "redacted.examples" and value:
            ctx.metrics.redactions.labels(key.removeprefix("redacted.")).inc(value)

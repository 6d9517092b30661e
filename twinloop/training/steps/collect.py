"""Steps 1-2: collect the pending examples and clean them; accepted ones become new items.

Nothing is committed until cleaning ends, so a cycle interrupted here starts over.
"""

from __future__ import annotations

import asyncio
import time

from twinloop.cleaning.examples import SCREEN_RULES, CandidateExample
from twinloop.cleaning.pipeline import clean
from twinloop.db.base import utcnow
from twinloop.db.models import TrainingExample, TrainingRunItem
from twinloop.states import CycleState, ItemRole, ItemStatus
from twinloop.training import repository
from twinloop.training.protocols import ProgressCallback
from twinloop.training.steps.context import ACTOR, CycleContext, Ending


async def collect_and_clean(
    ctx: CycleContext, cycle_id: str, _: ProgressCallback | None
) -> Ending | None:
    started = time.perf_counter()
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
        run.item_counts = {"collected": len(pending), **result.counts}
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
    # Feedback is balanced per user; examples sent as such count as one source.
    source = "ingest-examples" if example.feedback_id is None else f"user:{user_id or '-'}"
    heldout = example.heldout or {}
    return CandidateExample(
        id=example.id,
        domain=example.domain,
        question=example.question,
        answer=example.answer,
        source=source,
        category=f"{example.domain}/{example.source}",
        extra=(*map(str, heldout.get("paraphrases", ())), *map(str, heldout.get("accept", ()))),
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

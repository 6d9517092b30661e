"""Queries for training cycles, their items and the examples they learn from. Flushes only.

The caller owns the transaction: the gateway's `TrainingCycles` and each step of the
cycle runner open one (`sessionmaker.begin()`) and call these functions inside it.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import ColumnElement, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from twinloop.db.base import utcnow
from twinloop.db.models import (
    AdapterVersion,
    Answer,
    AuditEntry,
    Feedback,
    MinedSignal,
    TrainingExample,
    TrainingRun,
    TrainingRunItem,
)
from twinloop.errors import NotFoundError
from twinloop.states import IN_PROGRESS, UNFINISHED, CycleState, ItemRole, ItemStatus
from twinloop.training.preference import PairItem
from twinloop.training.replay import ReplayItem

# (item, its example, the external id of the feedback it came from, the mined proposal)
LineageRow = tuple[TrainingRunItem, TrainingExample, str | None, MinedSignal | None]

# -- cycles -------------------------------------------------------------------------------


async def find_run(session: AsyncSession, cycle_id: str) -> TrainingRun | None:
    return await session.get(TrainingRun, cycle_id)


async def get_run(session: AsyncSession, cycle_id: str) -> TrainingRun:
    """The cycle, which must exist (the runner works on cycles it claimed)."""
    run = await find_run(session, cycle_id)
    if run is None:
        raise NotFoundError(f"training cycle {cycle_id} does not exist")
    return run


async def set_state(session: AsyncSession, cycle_id: str, state: CycleState) -> TrainingRun:
    run = await get_run(session, cycle_id)
    run.state, run.updated_at = state, utcnow()
    await session.flush()
    return run


async def unfinished_run(session: AsyncSession) -> TrainingRun | None:
    """The oldest cycle queued or in progress, if any."""
    found = await session.execute(
        select(TrainingRun)
        .where(TrainingRun.state.in_(UNFINISHED))
        .order_by(TrainingRun.created_at)
        .limit(1)
    )
    return found.scalars().first()


async def recent_runs(session: AsyncSession, limit: int) -> list[TrainingRun]:
    rows = await session.execute(
        select(TrainingRun).order_by(TrainingRun.created_at.desc()).limit(limit)
    )
    return list(rows.scalars())


async def claim_queued(session: AsyncSession, cycle_id: str, owner: str) -> bool:
    """Move a queued cycle to `collecting` under `owner`; False if it was no longer queued."""
    result = await session.execute(
        update(TrainingRun)
        .where(TrainingRun.id == cycle_id, TrainingRun.state == CycleState.QUEUED)
        .values(
            state=CycleState.COLLECTING,
            owner=owner,
            attempts=TrainingRun.attempts + 1,
            updated_at=utcnow(),
        )
    )
    return bool(getattr(result, "rowcount", 0) == 1)


async def next_queued_id(session: AsyncSession) -> str | None:
    found = await session.execute(
        select(TrainingRun.id)
        .where(TrainingRun.state == CycleState.QUEUED)
        .order_by(TrainingRun.created_at)
        .limit(1)
    )
    return found.scalar_one_or_none()


async def runs_in_progress(session: AsyncSession) -> list[TrainingRun]:
    """Cycles past `queued` and not finished, oldest first, whoever works on them."""
    rows = await session.execute(
        select(TrainingRun)
        .where(TrainingRun.state.in_(IN_PROGRESS))
        .order_by(TrainingRun.created_at)
    )
    return list(rows.scalars())


async def last_rejected_before(session: AsyncSession, cycle_id: str) -> TrainingRun | None:
    """The latest finished cycle before this one, if it was rejected."""
    this = await get_run(session, cycle_id)
    row = await session.execute(
        select(TrainingRun)
        .where(
            TrainingRun.id != cycle_id,
            TrainingRun.finished_at.is_not(None),
            TrainingRun.created_at <= this.created_at,
        )
        .order_by(TrainingRun.finished_at.desc())
        .limit(1)
    )
    last = row.scalars().first()
    return last if last is not None and last.state == CycleState.REJECTED else None


async def add(session: AsyncSession, *records: TrainingRun | TrainingRunItem | AuditEntry) -> None:
    session.add_all(records)
    await session.flush()


# -- examples -----------------------------------------------------------------------------


async def count_pending(session: AsyncSession) -> int:
    """Training examples waiting for a cycle (what the schedule counts)."""
    count = await session.execute(
        select(func.count())
        .select_from(TrainingExample)
        .where(TrainingExample.status == ItemStatus.PENDING, TrainingExample.deleted_at.is_(None))
    )
    return int(count.scalar_one())


async def pending_examples(
    session: AsyncSession,
) -> list[tuple[TrainingExample, str | None]]:
    """Every pending, undeleted example, oldest first, with the user whose feedback it was
    (the answer's key-scoped user id, else the API key it was served to) or whose answers
    it was mined from."""
    rows = await session.execute(
        select(
            TrainingExample,
            func.coalesce(Answer.user_id, Answer.api_key_id, MinedSignal.source),
        )
        .outerjoin(Feedback, Feedback.id == TrainingExample.feedback_id)
        .outerjoin(Answer, Answer.id == Feedback.answer_id)
        .outerjoin(MinedSignal, MinedSignal.example_id == TrainingExample.id)
        .where(TrainingExample.status == ItemStatus.PENDING, TrainingExample.deleted_at.is_(None))
        .order_by(TrainingExample.created_at, TrainingExample.id)
    )
    return [(example, user_id) for example, user_id in rows.all()]


async def feedback_ids_of(session: AsyncSession, example_ids: Sequence[str]) -> list[str]:
    """The external ids of the feedback these examples came from (examples sent as such have
    none)."""
    if not example_ids:
        return []
    rows = await session.execute(
        select(Feedback.external_id)
        .join(TrainingExample, TrainingExample.feedback_id == Feedback.id)
        .where(TrainingExample.id.in_(example_ids))
    )
    return list(rows.scalars())


async def deleted_among(session: AsyncSession, example_ids: list[str]) -> set[str]:
    if not example_ids:
        return set()
    rows = await session.execute(
        select(TrainingExample.id).where(
            TrainingExample.id.in_(example_ids), TrainingExample.deleted_at.is_not(None)
        )
    )
    return set(rows.scalars())


async def tainted_among(session: AsyncSession, adapter_ids: list[str]) -> set[str]:
    if not adapter_ids:
        return set()
    rows = await session.execute(
        select(AdapterVersion.id).where(
            AdapterVersion.id.in_(adapter_ids), AdapterVersion.tainted.is_(True)
        )
    )
    return set(rows.scalars())


async def add_new_example(
    session: AsyncSession, run_id: str, example: TrainingExample
) -> TrainingRunItem:
    """`example` (made during the cycle, already accepted) recorded as one of its new items."""
    session.add(example)
    await session.flush()
    item = TrainingRunItem(
        run_id=run_id,
        example_id=example.id,
        domain=example.domain,
        role=ItemRole.NEW,
        question=example.question,
        answer=example.answer,
    )
    await add(session, item)
    return item


async def domain_replay(
    session: AsyncSession, domain: str, *, exclude: set[str], limit: int
) -> list[ReplayItem]:
    """Up to `limit` earlier accepted, undeleted examples of `domain`, newest first.

    The text is the one an earlier cycle trained on (after PII redaction), never the raw
    submission.
    """
    if limit <= 0:
        return []
    result = await session.execute(
        select(TrainingRunItem.example_id, TrainingRunItem.question, TrainingRunItem.answer)
        .join(TrainingExample, TrainingExample.id == TrainingRunItem.example_id)
        .where(
            TrainingRunItem.role == ItemRole.NEW,
            TrainingExample.domain == domain,
            TrainingExample.status == ItemStatus.ACCEPTED,
            TrainingExample.deleted_at.is_(None),
        )
        .order_by(TrainingExample.created_at.desc(), TrainingExample.id)
    )
    items: dict[str, ReplayItem] = {}
    for example_id, question, answer in result.all():
        if example_id in exclude or example_id in items:
            continue
        items[example_id] = ReplayItem(question=question, answer=answer, example_id=example_id)
        if len(items) == limit:
            break
    return list(items.values())


# -- items and lineage --------------------------------------------------------------------


async def live_items(session: AsyncSession, cycle_id: str, role: ItemRole) -> list[TrainingRunItem]:
    """The cycle's items in `role` whose example was not deleted, oldest example first."""
    rows = await session.execute(
        select(TrainingRunItem)
        .join(TrainingExample, TrainingExample.id == TrainingRunItem.example_id)
        .where(
            TrainingRunItem.run_id == cycle_id,
            TrainingRunItem.role == role,
            TrainingExample.deleted_at.is_(None),
        )
        .order_by(TrainingExample.created_at, TrainingExample.id)
    )
    return list(rows.scalars())


async def live_pairs(session: AsyncSession, cycle_id: str) -> list[PairItem]:
    """The cycle's new items whose example was not deleted and carries a rejected answer."""
    rows = await session.execute(
        select(
            TrainingRunItem.example_id,
            TrainingRunItem.domain,
            TrainingRunItem.question,
            TrainingRunItem.answer,
            TrainingExample.rejected_answer,
        )
        .join(TrainingExample, TrainingExample.id == TrainingRunItem.example_id)
        .where(
            TrainingRunItem.run_id == cycle_id,
            TrainingRunItem.role == ItemRole.NEW,
            TrainingExample.deleted_at.is_(None),
            TrainingExample.rejected_answer.is_not(None),
        )
        .order_by(TrainingExample.created_at, TrainingExample.id)
    )
    return [
        PairItem(example_id, domain, question, chosen, rejected or "")
        for example_id, domain, question, chosen, rejected in rows.all()
    ]


async def link_items(
    session: AsyncSession,
    cycle_id: str,
    domain: str,
    new: Sequence[ReplayItem],
    replay: Sequence[ReplayItem],
    adapter_id: str,
) -> None:
    """Record that `adapter_id` learned from these items (the lineage)."""
    new_ids = [i.example_id for i in new]
    rows = await session.execute(
        select(TrainingRunItem).where(
            TrainingRunItem.run_id == cycle_id, TrainingRunItem.example_id.in_(new_ids)
        )
    )
    for row in rows.scalars():
        row.adapter_version_id = adapter_id
    replay_ids = [i.example_id for i in replay if i.example_id is not None]
    earlier = await session.execute(
        select(TrainingRunItem).where(
            TrainingRunItem.run_id == cycle_id, TrainingRunItem.example_id.in_(replay_ids)
        )
    )
    existing = {row.example_id: row for row in earlier.scalars()}
    for item in replay:
        if item.example_id is None:
            continue
        if item.example_id in existing:  # replayed in an earlier round of this cycle
            existing[item.example_id].adapter_version_id = adapter_id
            continue
        session.add(
            TrainingRunItem(
                run_id=cycle_id,
                example_id=item.example_id,
                domain=domain,
                role=ItemRole.REPLAY,
                question=item.question,
                answer=item.answer,
                adapter_version_id=adapter_id,
            )
        )
    await session.flush()


async def items_trained_by(session: AsyncSession, adapter_id: str) -> list[LineageRow]:
    return await _lineage_rows(session, TrainingRunItem.adapter_version_id == adapter_id)


async def items_of_role(
    session: AsyncSession, cycle_id: str, role: ItemRole, domain: str
) -> list[LineageRow]:
    return await _lineage_rows(
        session,
        TrainingRunItem.run_id == cycle_id,
        TrainingRunItem.role == role,
        TrainingRunItem.domain == domain,
    )


async def _lineage_rows(session: AsyncSession, *where: ColumnElement[bool]) -> list[LineageRow]:
    rows = await session.execute(
        select(TrainingRunItem, TrainingExample, Feedback.external_id, MinedSignal)
        .join(TrainingExample, TrainingExample.id == TrainingRunItem.example_id)
        .outerjoin(Feedback, Feedback.id == TrainingExample.feedback_id)
        .outerjoin(MinedSignal, MinedSignal.example_id == TrainingExample.id)
        .where(*where)
        .order_by(TrainingRunItem.role, TrainingExample.created_at)
    )
    return [(item, example, feedback, mined) for item, example, feedback, mined in rows.all()]

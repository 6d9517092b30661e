"""Rows for the items tests: a cycle, its examples, its items and an adapter that learned them."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from twinloop.db.models import AdapterVersion, TrainingExample, TrainingRun, TrainingRunItem
from twinloop.states import CycleState, ItemRole, ItemStatus


async def cycle(session: AsyncSession, state: str = CycleState.CANARY) -> TrainingRun:
    run = TrainingRun(state=state, trigger="cli")
    session.add(run)
    await session.flush()
    return run


async def example(
    session: AsyncSession,
    question: str,
    *,
    source: str = "correction",
    status: str = ItemStatus.ACCEPTED,
    rejections: int = 0,
) -> TrainingExample:
    row = TrainingExample(
        source=source,
        domain="law",
        question=question,
        answer=f"answer to {question}",
        status=status,
        content_sha256=question,
        rejections=rejections,
    )
    session.add(row)
    await session.flush()
    return row


async def item(
    session: AsyncSession,
    run: TrainingRun,
    row: TrainingExample,
    role: str = ItemRole.NEW,
    adapter_id: str | None = None,
) -> TrainingRunItem:
    linked = TrainingRunItem(
        run_id=run.id,
        example_id=row.id,
        domain=row.domain,
        role=role,
        question=row.question,
        answer=row.answer,
        adapter_version_id=adapter_id,
    )
    session.add(linked)
    await session.flush()
    return linked


async def adapter(session: AsyncSession, name: str) -> AdapterVersion:
    row = AdapterVersion(
        domain="law", name=name, base_model="base", path=f"/adapters/{name}", sha256=name
    )
    session.add(row)
    await session.flush()
    return row

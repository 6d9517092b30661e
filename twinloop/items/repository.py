"""Queries of a cycle's learning items. The caller owns the transaction."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from twinloop.db.models import TrainingExample, TrainingRunItem
from twinloop.states import ItemRole, ItemStatus


async def accepted_new_examples(
    session: AsyncSession, cycle_id: str, *, untrained_only: bool
) -> list[TrainingExample]:
    """The cycle's new items still accepted (`untrained_only`: no adapter learned them yet)."""
    query = (
        select(TrainingExample)
        .join(TrainingRunItem, TrainingRunItem.example_id == TrainingExample.id)
        .where(
            TrainingRunItem.run_id == cycle_id,
            TrainingRunItem.role == ItemRole.NEW,
            TrainingExample.status == ItemStatus.ACCEPTED,
        )
    )
    if untrained_only:
        query = query.where(TrainingRunItem.adapter_version_id.is_(None))
    return list((await session.execute(query)).scalars())

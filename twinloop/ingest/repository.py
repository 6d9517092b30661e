"""Queries for ingested documents, feedback, examples and idempotency keys. Flushes only."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from twinloop.db.models import Answer, Document, Feedback, IdempotencyKey, TrainingExample


async def live_document(session: AsyncSession, external_id: str) -> Document | None:
    """The current version of a document (not removed), in any domain."""
    result = await session.execute(
        select(Document).where(
            Document.external_id == external_id, Document.removed_in_version.is_(None)
        )
    )
    return result.scalars().first()


async def latest_rag_version(session: AsyncSession, domain: str) -> int:
    added = select(func.max(Document.added_in_version)).where(Document.domain == domain)
    removed = select(func.max(Document.removed_in_version)).where(Document.domain == domain)
    values = [(await session.execute(q)).scalar_one_or_none() or 0 for q in (added, removed)]
    return max(values)


async def idempotency_key(session: AsyncSession, key: str) -> IdempotencyKey | None:
    return await session.get(IdempotencyKey, key)


async def answer(session: AsyncSession, answer_id: str) -> Answer | None:
    return await session.get(Answer, answer_id)


async def feedback_by_external_id(session: AsyncSession, external_id: str) -> Feedback | None:
    found = await session.execute(select(Feedback).where(Feedback.external_id == external_id))
    return found.scalars().first()


async def live_correction(
    session: AsyncSession, feedback_external_id: str
) -> tuple[Feedback, Answer] | None:
    """Undeleted feedback with the answer it rates, if there is such feedback."""
    found = await session.execute(
        select(Feedback, Answer)
        .join(Answer, Answer.id == Feedback.answer_id)
        .where(Feedback.external_id == feedback_external_id, Feedback.deleted_at.is_(None))
    )
    row = found.first()
    return None if row is None else (row[0], row[1])


async def example_by_external_id(session: AsyncSession, external_id: str) -> TrainingExample | None:
    found = await session.execute(
        select(TrainingExample).where(TrainingExample.external_id == external_id)
    )
    return found.scalars().first()


async def live_examples_of(session: AsyncSession, feedback_id: str) -> list[TrainingExample]:
    """The live (not deleted) examples a feedback item became."""
    result = await session.execute(
        select(TrainingExample).where(
            TrainingExample.feedback_id == feedback_id, TrainingExample.deleted_at.is_(None)
        )
    )
    return list(result.scalars())


async def example_ids_of(session: AsyncSession, feedback_id: str) -> list[str]:
    """Every example a feedback item ever became, deleted ones included."""
    result = await session.execute(
        select(TrainingExample.id).where(TrainingExample.feedback_id == feedback_id)
    )
    return list(result.scalars())


async def add(
    session: AsyncSession, *records: Document | IdempotencyKey | Feedback | TrainingExample
) -> None:
    session.add_all(records)
    await session.flush()

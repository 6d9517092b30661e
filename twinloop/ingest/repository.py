"""Queries for ingested documents, RAG versions, feedback, examples and idempotency keys.

Flushes only."""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from twinloop.db.models import (
    Answer,
    Document,
    Feedback,
    IdempotencyKey,
    RagVersion,
    TrainingExample,
)
from twinloop.states import OPEN_RAG_VERSIONS, USABLE_RAG_VERSIONS, RagVersionState


async def live_document(session: AsyncSession, external_id: str) -> Document | None:
    """The current version of a document (not removed), in any domain."""
    result = await session.execute(
        select(Document).where(
            Document.external_id == external_id, Document.removed_in_version.is_(None)
        )
    )
    return result.scalars().first()


async def latest_rag_version(session: AsyncSession, domain: str) -> int:
    """The domain's newest version a snapshot may pin (its batch committed); 0 if none."""
    found = await session.execute(
        select(func.max(RagVersion.version)).where(
            RagVersion.domain == domain, RagVersion.state.in_(USABLE_RAG_VERSIONS)
        )
    )
    return found.scalar_one_or_none() or 0


async def next_rag_version(session: AsyncSession, domain: str) -> int:
    """One above every version the domain ever gave out, whatever became of it."""
    found = await session.execute(
        select(func.max(RagVersion.version)).where(RagVersion.domain == domain)
    )
    return (found.scalar_one_or_none() or 0) + 1


async def open_rag_versions(session: AsyncSession, domains: Collection[str]) -> list[RagVersion]:
    """The reserved or failed versions of these domains (at most one each)."""
    found = await session.execute(
        select(RagVersion).where(
            RagVersion.domain.in_(domains), RagVersion.state.in_(OPEN_RAG_VERSIONS)
        )
    )
    return list(found.scalars())


async def fail_expired_reservations(
    session: AsyncSession, domains: Collection[str], reserved_before: datetime
) -> None:
    """Reservations of these domains older than `reserved_before` become failed."""
    await session.execute(
        update(RagVersion)
        .where(
            RagVersion.domain.in_(domains),
            RagVersion.state == RagVersionState.RESERVED,
            RagVersion.created_at < reserved_before,
        )
        .values(state=RagVersionState.FAILED)
    )


async def move_rag_version(
    session: AsyncSession,
    domain: str,
    version: int,
    *,
    from_states: Collection[RagVersionState],
    to: RagVersionState,
) -> bool:
    """Move one version to `to` if it is in one of `from_states`; whether it moved."""
    result = await session.execute(
        update(RagVersion)
        .where(
            RagVersion.domain == domain,
            RagVersion.version == version,
            RagVersion.state.in_(from_states),
        )
        .values(state=to)
    )
    return bool(getattr(result, "rowcount", 0) == 1)


async def unstaged_rag_versions(session: AsyncSession) -> dict[str, int]:
    """Per domain, the newest committed version no staging has shown yet."""
    found = await session.execute(
        select(RagVersion.domain, func.max(RagVersion.version))
        .where(RagVersion.state == RagVersionState.COMMITTED)
        .group_by(RagVersion.domain)
    )
    return {domain: version for domain, version in found}


async def mark_rag_versions_staged(session: AsyncSession, up_to: dict[str, int]) -> None:
    """Committed versions up to `up_to[domain]` were shown by a staged snapshot."""
    for domain, version in up_to.items():
        await session.execute(
            update(RagVersion)
            .where(
                RagVersion.domain == domain,
                RagVersion.version <= version,
                RagVersion.state == RagVersionState.COMMITTED,
            )
            .values(state=RagVersionState.STAGED)
        )


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
    session: AsyncSession,
    *records: Document | IdempotencyKey | Feedback | TrainingExample | RagVersion,
) -> None:
    session.add_all(records)
    await session.flush()

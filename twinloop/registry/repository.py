"""Queries for adapter versions. Flushes, never commits."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from twinloop.db.models import AdapterVersion, AuditEntry, TrainingRun, TrainingRunItem


async def get(session: AsyncSession, adapter_id: str) -> AdapterVersion | None:
    return await session.get(AdapterVersion, adapter_id)


async def get_by_sha256(session: AsyncSession, sha256: str) -> AdapterVersion | None:
    result = await session.execute(select(AdapterVersion).where(AdapterVersion.sha256 == sha256))
    return result.scalar_one_or_none()


async def list_versions(session: AsyncSession, domain: str | None = None) -> list[AdapterVersion]:
    """Newest first; all domains unless one is named."""
    query = select(AdapterVersion).order_by(
        AdapterVersion.created_at.desc(), AdapterVersion.id.desc()
    )
    if domain is not None:
        query = query.where(AdapterVersion.domain == domain)
    result = await session.execute(query)
    return list(result.scalars())


async def training_run_exists(session: AsyncSession, training_run_id: str) -> bool:
    return await session.get(TrainingRun, training_run_id) is not None


async def add(session: AsyncSession, *records: AdapterVersion | AuditEntry) -> None:
    session.add_all(records)
    await session.flush()


async def taint_adapters_of(
    session: AsyncSession, example_ids: Sequence[str], reason: str
) -> list[str]:
    """Mark every adapter trained on one of `example_ids` as tainted, and every adapter grown
    from a tainted one (its weights carry what the deleted item taught); returns their ids."""
    if not example_ids:
        return []
    # Each adapter once, through a subquery: PostgreSQL cannot DISTINCT rows with a JSON
    # column (`metrics`), and a join would repeat an adapter per item it trained on.
    trained = select(TrainingRunItem.adapter_version_id).where(
        TrainingRunItem.example_id.in_(example_ids)
    )
    found = await session.execute(select(AdapterVersion).where(AdapterVersion.id.in_(trained)))
    tainted: dict[str, str] = {}
    generation = list(found.scalars())
    for adapter in generation:
        tainted[adapter.id] = _taint(adapter, reason)
    while generation:  # down the grown_from chains, one generation per query
        grown = await session.execute(
            select(AdapterVersion).where(
                AdapterVersion.grown_from_id.in_([a.id for a in generation])
            )
        )
        generation = [a for a in grown.scalars() if a.id not in tainted]
        for adapter in generation:
            assert adapter.grown_from_id is not None
            why = f"grown from {adapter.grown_from_id}, {tainted[adapter.grown_from_id]}"
            tainted[adapter.id] = _taint(adapter, why)
    await session.flush()
    return sorted(tainted)


def _taint(adapter: AdapterVersion, reason: str) -> str:
    """Taint `adapter` unless it already is; the reason it is tainted for."""
    if not adapter.tainted:
        adapter.tainted, adapter.tainted_reason = True, reason
    return adapter.tainted_reason or reason

"""Which snapshot stands for which: a child serving the same adapter in every domain does,
through any number of such children; a snapshot with other adapters breaks the chain."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from twinloop.db.models import Snapshot
from twinloop.releases import snapshots


async def _snapshot(
    session: AsyncSession, parent: Snapshot | None, adapters: dict[str, str | None]
) -> Snapshot:
    row = Snapshot(
        base_model="base",
        adapters=adapters,
        parent_id=parent.id if parent else None,
        created_by="test",
        reason="test",
    )
    session.add(row)
    await session.flush()
    return row


async def _lineage(session: AsyncSession, snapshot: Snapshot) -> list[str]:
    return [s.id async for s in snapshots.same_adapter_lineage(session, snapshot.id)]


async def test_a_chain_of_children_with_the_same_adapters_stands_for_its_root(
    session: AsyncSession,
) -> None:
    base = await _snapshot(session, None, {})
    trained = await _snapshot(session, base, {"law": "a1"})
    # A domain on the base model written as null serves the same as one left out.
    ingested = await _snapshot(session, trained, {"law": "a1", "fin": None})
    again = await _snapshot(session, ingested, {"law": "a1"})

    assert await _lineage(session, again) == [again.id, ingested.id, trained.id]
    assert await snapshots.stands_for(session, again.id, trained.id)
    assert await snapshots.stands_for(session, trained.id, trained.id)
    # Not upwards, and not past the snapshot that changed the adapters.
    assert not await snapshots.stands_for(session, trained.id, again.id)
    assert not await snapshots.stands_for(session, again.id, base.id)


async def test_a_child_with_other_adapters_breaks_the_chain(session: AsyncSession) -> None:
    trained = await _snapshot(session, None, {"law": "a1"})
    retrained = await _snapshot(session, trained, {"law": "a1", "general": "g1"})
    ingested = await _snapshot(session, retrained, {"law": "a1", "general": "g1"})
    # Back to the first adapters: a descendant, yet not through snapshots serving them.
    restored = await _snapshot(session, ingested, {"law": "a1"})

    assert await _lineage(session, ingested) == [ingested.id, retrained.id]
    assert await snapshots.stands_for(session, ingested.id, retrained.id)
    assert not await snapshots.stands_for(session, ingested.id, trained.id)
    assert not await snapshots.stands_for(session, restored.id, trained.id)
    assert not await snapshots.stands_for(session, "missing", trained.id)
    assert not await snapshots.stands_for(session, ingested.id, "missing")
    assert await _lineage(session, Snapshot(id="missing")) == []

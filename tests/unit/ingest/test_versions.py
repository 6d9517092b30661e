"""RAG versions: reserved alone, one writer per domain, a lease, undone on failure."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from rag.store import PreparedDocument
from twinloop.db.models import RagVersion
from twinloop.db.session import SessionMaker
from twinloop.ingest.versions import DomainBusyError, IngestTimeoutError, RagVersions
from twinloop.states import RagVersionState
from twinloop.testing.knowledge import FakeKnowledge


def _versions(
    sessionmaker: SessionMaker, index: FakeKnowledge, *, lease_s: float = 60.0
) -> RagVersions:
    return RagVersions(
        sessionmaker=sessionmaker,
        index=index,
        lease_s=lease_s,
        write_timeout_s=lease_s / 4,
        busy_wait_s=0.3,
    )


async def _write(index: FakeKnowledge, doc_id: str, version: int) -> None:
    document = PreparedDocument(chunks=(doc_id,), embeddings=np.zeros((1, 1), dtype=np.float32))
    await index.write_document(
        domain="law", doc_id=doc_id, document=document, source="", version=version
    )


async def _state(sessionmaker: SessionMaker, domain: str, version: int) -> str | None:
    async with sessionmaker() as session:
        row = await session.get(RagVersion, (domain, version))
        return None if row is None else row.state


async def test_a_domain_being_written_makes_another_reservation_wait_then_refuses_it(
    sessionmaker: SessionMaker,
) -> None:
    versions = _versions(sessionmaker, FakeKnowledge())
    first = await versions.reserve(["law"], actor="a")

    with pytest.raises(DomainBusyError) as refused:
        await versions.reserve(["med", "law"], actor="b")

    assert first.versions == {"law": 1}
    assert refused.value.status_code == 409
    assert "RAG version 1 of 'law'" in refused.value.message
    # All or nothing: med was not taken by the refused batch.
    assert (await versions.reserve(["med"], actor="c")).versions == {"med": 1}


async def test_versions_are_never_given_twice_whatever_became_of_them(
    sessionmaker: SessionMaker,
) -> None:
    index = FakeKnowledge()
    versions = _versions(sessionmaker, index)
    failed = await versions.reserve(["law"], actor="a")
    await _write(index, "orphan", failed.versions["law"])

    await versions.abandon(failed)
    committed = await versions.reserve(["law"], actor="a")
    async with sessionmaker.begin() as session:
        await versions.commit(session, committed)

    assert (failed.versions, committed.versions) == ({"law": 1}, {"law": 2})
    assert await _state(sessionmaker, "law", 1) == RagVersionState.ABANDONED
    assert await _state(sessionmaker, "law", 2) == RagVersionState.COMMITTED
    assert index.rows == []  # the abandoned version's chunk was undone


async def test_a_reservation_past_its_lease_is_undone_by_the_next_and_cannot_commit(
    sessionmaker: SessionMaker,
) -> None:
    index = FakeKnowledge()
    versions = _versions(sessionmaker, index, lease_s=0.4)
    dead = await versions.reserve(["law"], actor="a")
    await _write(index, "half-written", dead.versions["law"])
    await asyncio.sleep(0.5)

    with pytest.raises(IngestTimeoutError):
        dead.check_time()  # its writer would start no more writes ...
    taken = await versions.reserve(["law"], actor="b")

    assert taken.versions == {"law": 2}
    assert await _state(sessionmaker, "law", 1) == RagVersionState.ABANDONED
    assert index.rows == []
    with pytest.raises(IngestTimeoutError):  # ... and its commit is refused
        async with sessionmaker.begin() as session:
            await versions.commit(session, dead)


async def test_abandoning_a_batch_whose_commit_went_through_keeps_it(
    sessionmaker: SessionMaker,
) -> None:
    index = FakeKnowledge()
    versions = _versions(sessionmaker, index)
    reservation = await versions.reserve(["law"], actor="a")
    await _write(index, "kept", reservation.versions["law"])
    async with sessionmaker.begin() as session:
        await versions.commit(session, reservation)

    await versions.abandon(reservation)  # an error that came after the commit

    assert await _state(sessionmaker, "law", 1) == RagVersionState.COMMITTED
    assert index.visible("law", 1) == [("kept", "kept")]

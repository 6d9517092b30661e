"""Group commit of answers: concurrent answers in one transaction, each stored before its
store returns; a failing batch fails every request in it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from twinloop.db.models import Answer
from twinloop.db.session import SessionMaker, create_writer_engine
from twinloop.inference.writer import AnswerWriter
from twinloop.metrics import Metrics
from twinloop.settings import Settings


@pytest.fixture
async def writer_db(settings: Settings) -> AsyncIterator[AsyncEngine]:
    engine = create_writer_engine(settings.sqlalchemy_url)
    yield engine
    await engine.dispose()


def _answer(question: str, **overrides: object) -> Answer:
    fields: dict[str, object] = {
        "route": "answer", "question": question, "answer": "A.", "domain": "law",
        "slot": "blue", "model": "m", "latency_ms": 1.0, "role": "active",
    }  # fmt: skip
    return Answer(**{**fields, **overrides})


def _sample(metrics: Metrics, name: str, labels: dict[str, str] | None = None) -> float:
    value = metrics.registry.get_sample_value(name, labels or {})
    return value or 0.0


async def _count(sessionmaker: SessionMaker) -> int:
    async with sessionmaker() as session:
        return int(await session.scalar(select(func.count()).select_from(Answer)) or 0)


async def test_concurrent_answers_are_committed_together_and_readable_once_stored(
    writer_db: AsyncEngine, sessionmaker: SessionMaker
) -> None:
    metrics = Metrics()
    writer = AnswerWriter(engine=writer_db, metrics=metrics)
    records = [_answer(f"Q{i}?") for i in range(20)]

    async def store_then_read(record: Answer) -> Answer | None:
        await writer.store(record)
        async with sessionmaker() as session:  # another connection: it is committed
            return await session.get(Answer, record.id)

    try:
        read = await asyncio.gather(*(store_then_read(r) for r in records))
    finally:
        await writer.aclose()

    assert [row.question if row else None for row in read] == [r.question for r in records]
    # All twenty queued before the writer first ran: one transaction.
    assert _sample(metrics, "twinloop_answer_batches_total", {"outcome": "committed"}) == 1
    assert _sample(metrics, "twinloop_answer_batch_size_sum") == 20


async def test_a_failing_batch_fails_every_request_in_it_and_the_next_batch_commits(
    writer_db: AsyncEngine, sessionmaker: SessionMaker
) -> None:
    metrics = Metrics()
    writer = AnswerWriter(engine=writer_db, metrics=metrics)
    good = [_answer(f"Q{i}?") for i in range(5)]
    poisoned = _answer("bad", snapshot_id="no-such-snapshot")  # a foreign key that fails
    try:
        results = await asyncio.gather(
            *(writer.store(r) for r in [*good[:2], poisoned, *good[2:]]), return_exceptions=True
        )
        assert [type(r) for r in results] == [IntegrityError] * 6  # none silently lost
        assert await _count(sessionmaker) == 0

        await writer.store(_answer("after"))  # the writer goes on with a new connection
    finally:
        await writer.aclose()

    assert await _count(sessionmaker) == 1
    assert _sample(metrics, "twinloop_answer_batches_total", {"outcome": "failed"}) == 1


async def test_a_request_cancelled_while_it_waits_still_has_its_answer_stored(
    writer_db: AsyncEngine, sessionmaker: SessionMaker
) -> None:
    writer = AnswerWriter(engine=writer_db, metrics=Metrics())
    record = _answer("Q?")
    task = asyncio.create_task(writer.store(record))
    await asyncio.sleep(0)  # queued
    task.cancel()
    await writer.aclose()  # commits what is queued

    async with sessionmaker() as session:
        assert await session.get(Answer, record.id) is not None


async def test_answers_served_at_once_are_all_stored_when_their_ids_are_returned(
    client: httpx.AsyncClient, sessionmaker: SessionMaker
) -> None:
    async def ask(i: int) -> str:
        response = await client.post("/answer", json={"question": f"Q{i}?", "domain": "law"})
        assert response.status_code == 200, response.text
        answer_id: str = response.json()["answer_id"]
        async with sessionmaker() as session:  # read at once, on another connection
            assert await session.get(Answer, answer_id) is not None
        return answer_id

    ids = await asyncio.gather(*(ask(i) for i in range(16)))
    assert len(set(ids)) == 16

"""What every answer writer must do, on whichever database: the unit tests run it on SQLite
(the thread writer), tests/integration/test_writer_postgres.py on PostgreSQL (the loop
writer)."""

from __future__ import annotations

import asyncio
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from twinloop.db.models import Answer
from twinloop.db.session import SessionMaker
from twinloop.inference.records import AnswerRecord
from twinloop.inference.writer import answer_writer
from twinloop.metrics import Metrics


def _answer(question: str, **overrides: Any) -> AnswerRecord:
    fields: dict[str, Any] = {
        "route": "answer", "question": question, "answer": "A.", "domain": "law",
        "slot": "blue", "model": "m", "latency_ms": 1.0, "role": "active",
    }  # fmt: skip
    return AnswerRecord(**{**fields, **overrides})


def _sample(metrics: Metrics, name: str, labels: dict[str, str] | None = None) -> float:
    value = metrics.registry.get_sample_value(name, labels or {})
    return value or 0.0


async def _count(sessionmaker: SessionMaker) -> int:
    async with sessionmaker() as session:
        return int(await session.scalar(select(func.count()).select_from(Answer)) or 0)


async def concurrent_answers_are_committed_together_and_readable_once_stored(
    url: str, sessionmaker: SessionMaker
) -> None:
    metrics = Metrics()
    writer = answer_writer(url, metrics=metrics)
    records = [_answer(f"Q{i}?") for i in range(20)]

    async def store_then_read(record: AnswerRecord) -> Answer | None:
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


async def a_failing_batch_fails_every_request_in_it_and_the_next_batch_commits(
    url: str, sessionmaker: SessionMaker
) -> None:
    metrics = Metrics()
    writer = answer_writer(url, metrics=metrics)
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


async def a_request_cancelled_while_it_waits_still_has_its_answer_stored(
    url: str, sessionmaker: SessionMaker
) -> None:
    writer = answer_writer(url, metrics=Metrics())
    record = _answer("Q?")
    task = asyncio.create_task(writer.store(record))
    await asyncio.sleep(0)  # queued
    task.cancel()
    await writer.aclose()  # commits what is queued

    async with sessionmaker() as session:
        assert await session.get(Answer, record.id) is not None

"""Group commit of answers: concurrent answers in one transaction, each stored before its
store returns; a failing batch fails every request in it."""

from __future__ import annotations

import asyncio

import httpx

from tests.unit.inference.writer_scenarios import (
    a_failing_batch_fails_every_request_in_it_and_the_next_batch_commits,
    a_request_cancelled_while_it_waits_still_has_its_answer_stored,
    concurrent_answers_are_committed_together_and_readable_once_stored,
)
from twinloop.db.models import Answer
from twinloop.db.session import SessionMaker
from twinloop.settings import Settings


async def test_concurrent_answers_are_committed_together_and_readable_once_stored(
    settings: Settings, sessionmaker: SessionMaker
) -> None:
    await concurrent_answers_are_committed_together_and_readable_once_stored(
        settings.sqlalchemy_url, sessionmaker
    )


async def test_a_failing_batch_fails_every_request_in_it_and_the_next_batch_commits(
    settings: Settings, sessionmaker: SessionMaker
) -> None:
    await a_failing_batch_fails_every_request_in_it_and_the_next_batch_commits(
        settings.sqlalchemy_url, sessionmaker
    )


async def test_a_request_cancelled_while_it_waits_still_has_its_answer_stored(
    settings: Settings, sessionmaker: SessionMaker
) -> None:
    await a_request_cancelled_while_it_waits_still_has_its_answer_stored(
        settings.sqlalchemy_url, sessionmaker
    )


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

"""The miner's queries on PostgreSQL: a pass, agreement, review, and two passes at once.

No engine, model or Chroma is started: the answer log is written directly and questions
are compared lexically.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy import func, select

from twinloop.cleaning.config import CleaningConfig
from twinloop.db import migrate
from twinloop.db.models import MinedSignal, MiningRun, TrainingExample
from twinloop.db.session import SessionMaker, create_engine, create_sessionmaker
from twinloop.mining import repository
from twinloop.mining.metrics import MiningMetrics
from twinloop.mining.service import MiningService, question_similarity
from twinloop.settings import MiningSettings
from twinloop.states import ABANDONED_FINISH_REASON, ItemStatus, MinedState
from twinloop.testing.answer_log import AnswerLog, after

pytestmark = pytest.mark.integration

TENANCY = "What notice period applies to a tenancy in Zelland?"
TENANCY_AGAIN = "Zelland tenancy: which notice period applies?"


@pytest.fixture
def migrated(postgres_database: str) -> str:
    migrate.upgrade(postgres_database)
    return postgres_database


def _miner(sessionmaker: SessionMaker) -> MiningService:
    settings = MiningSettings()
    return MiningService(
        sessionmaker=sessionmaker,
        settings=settings,
        cleaning=CleaningConfig(),
        metrics=MiningMetrics(CollectorRegistry()),
        similarity=question_similarity(settings, None),
    )


async def _count(sessionmaker: SessionMaker, model: type) -> int:
    async with sessionmaker() as session:
        return int((await session.execute(select(func.count()).select_from(model))).scalar_one())


async def _write_log(log: AnswerLog) -> None:
    """Two users retry one question (they agree); a third abandons, an anonymous user and a
    preview retry (not mined); one user follows an answer with "no, that's wrong"."""
    for offset, user in ((0, "key1:u1"), (1000, "key2:u2")):
        await log.served(offset, TENANCY, "Two days.", user=user)
        await log.served(offset + 40, TENANCY_AGAIN, "Six weeks.", user=user)
    await log.served(2000, "Who runs Zelco?", user="key1:u3", finish_reason=ABANDONED_FINISH_REASON)
    await log.served(2100, TENANCY, user=None)
    await log.served(2110, TENANCY, user=None)
    await log.served(2200, TENANCY, user="key1:u4", preview=True)
    await log.served(2210, TENANCY, user="key1:u4", preview=True)
    await log.served(3000, "Who audits Zelco?", "Nobody.", user=None, session="s9")
    await log.served(3030, "No, that's wrong: Brask & Co audit Zelco.", user=None, session="s9")


async def test_a_pass_on_postgres_finds_agrees_and_a_review_settles(migrated: str) -> None:
    engine = create_engine(migrated)
    sessionmaker = create_sessionmaker(engine)
    try:
        await _write_log(AnswerLog(sessionmaker))
        miner = _miner(sessionmaker)

        run = await miner.mine(trigger="schedule", now=after(4000))

        assert run is not None and run.counts["answers"] == 7  # not the anonymous, previews
        listed = await miner.listing()
        by_rule = {(i.rule, i.source): i for i in listed.items}
        assert set(by_rule) == {
            ("retry", "key1:u1"),
            ("retry", "key2:u2"),
            ("abandoned", "key1:u3"),
            ("negative_followup", "-/session:s9"),
        }
        assert listed.counts == {
            "agreed": {"retry": 2},
            "proposed": {"abandoned": 1, "negative_followup": 1},
        }
        followup = by_rule[("negative_followup", "-/session:s9")]
        assert followup.chosen_answer == "Brask & Co audit Zelco."
        async with sessionmaker() as session:
            pending = (
                (
                    await session.execute(
                        select(TrainingExample).where(TrainingExample.source == "mined")
                    )
                )
                .scalars()
                .all()
            )
        assert [(e.status, e.answer, e.rejected_answer) for e in pending] == [
            (ItemStatus.PENDING, "Six weeks.", "Two days."),
        ] * 2

        accepted = await miner.accept(followup.id, actor="admin", reason="checked")
        rejected = await miner.reject(by_rule[("retry", "key1:u1")].id, actor="admin")
        assert (accepted.state, accepted.example_status) == (MinedState.ACCEPTED, "pending")
        assert rejected.state == MinedState.REJECTED
        async with sessionmaker() as session:
            example = await session.get(TrainingExample, rejected.example_id)
        assert example is not None and example.deleted_at is not None

        # The next pass reads on from this one and adds nothing for what it has.
        again = await miner.mine(trigger="schedule", now=after(4100))
        assert again is not None and again.scanned_from == after(4000)
        assert await _count(sessionmaker, MinedSignal) == 4
    finally:
        await engine.dispose()


async def test_two_passes_at_once_store_each_proposal_and_example_once(
    migrated: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Two processes in effect: each its own engine (connection pool).
    engines = [create_engine(migrated) for _ in range(2)]
    makers = [create_sessionmaker(engine) for engine in engines]
    # Both passes look for existing proposals before either stores any: their inserts collide.
    both_looked = asyncio.Barrier(2)
    looked = repository.existing_keys
    calls: list[int] = []

    async def look_together(*args: Any, **kwargs: Any) -> set[tuple[str, str]]:
        found = await looked(*args, **kwargs)
        calls.append(1)
        if len(calls) <= 2:  # each pass's first look; the loser's second one goes on
            await asyncio.wait_for(both_looked.wait(), timeout=10)
        return found

    monkeypatch.setattr(repository, "existing_keys", look_together)
    try:
        await _write_log(AnswerLog(makers[0]))

        runs = await asyncio.gather(
            *(_miner(m).mine(trigger="cycle", now=after(4000)) for m in makers)
        )

        assert all(run is not None for run in runs)
        assert await _count(makers[0], MinedSignal) == 4
        assert await _count(makers[0], TrainingExample) == 2
        assert await _count(makers[0], MiningRun) == 2
        assert len(calls) == 3  # one pass collided and looked again
    finally:
        for engine in engines:
            await engine.dispose()

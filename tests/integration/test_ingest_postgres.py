"""RAG versions on PostgreSQL: two processes reserving one domain at once, one wins.

No engine or Chroma process is started: the index is the in-memory fake.
"""

from __future__ import annotations

import asyncio

import pytest

from twinloop.db import migrate
from twinloop.db.session import create_engine, create_sessionmaker
from twinloop.ingest.versions import DomainBusyError, RagVersions
from twinloop.testing.knowledge import FakeKnowledge

pytestmark = pytest.mark.integration


@pytest.fixture
def migrated(postgres_database: str) -> str:
    migrate.upgrade(postgres_database)
    return postgres_database


async def test_one_of_two_concurrent_reservations_of_a_domain_wins(migrated: str) -> None:
    # Two processes in effect: each its own engine (connection pool).
    engines = [create_engine(migrated) for _ in range(2)]
    index = FakeKnowledge()
    first, second = (
        RagVersions(
            sessionmaker=create_sessionmaker(engine),
            index=index,
            lease_s=60,
            write_timeout_s=10,
            busy_wait_s=0.5,
        )
        for engine in engines
    )
    try:
        outcomes = await asyncio.gather(
            *(v.reserve(["law", "med"], actor=f"p{n}") for n, v in enumerate((first, second))),
            return_exceptions=True,
        )

        won = [o for o in outcomes if not isinstance(o, BaseException)]
        lost = [o for o in outcomes if isinstance(o, BaseException)]
        assert len(won) == 1 and won[0].versions == {"law": 1, "med": 1}
        assert len(lost) == 1 and isinstance(lost[0], DomainBusyError)

        sessionmaker = create_sessionmaker(engines[0])
        async with sessionmaker.begin() as session:
            await first.commit(session, won[0])
        assert (await second.reserve(["med"], actor="p1")).versions == {"med": 2}
    finally:
        for engine in engines:
            await engine.dispose()

"""The answers' group commit on PostgreSQL (the loop writer, asyncpg): what the unit tests
check of the thread writer on SQLite, against a real server."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.unit.inference.writer_scenarios import (
    a_failing_batch_fails_every_request_in_it_and_the_next_batch_commits,
    a_request_cancelled_while_it_waits_still_has_its_answer_stored,
    concurrent_answers_are_committed_together_and_readable_once_stored,
)
from twinloop.db import migrate
from twinloop.db.session import SessionMaker, create_engine, create_sessionmaker

pytestmark = pytest.mark.integration


@pytest.fixture
def migrated_url(postgres_database: str) -> str:
    migrate.upgrade(postgres_database)  # Alembic runs a loop of its own: not in an async fixture
    return postgres_database


@pytest.fixture
async def migrated(migrated_url: str) -> AsyncIterator[tuple[str, SessionMaker]]:
    engine = create_engine(migrated_url)
    yield migrated_url, create_sessionmaker(engine)
    await engine.dispose()


async def test_concurrent_answers_are_committed_together_and_readable_once_stored(
    migrated: tuple[str, SessionMaker],
) -> None:
    await concurrent_answers_are_committed_together_and_readable_once_stored(*migrated)


async def test_a_failing_batch_fails_every_request_in_it_and_the_next_batch_commits(
    migrated: tuple[str, SessionMaker],
) -> None:
    await a_failing_batch_fails_every_request_in_it_and_the_next_batch_commits(*migrated)


async def test_a_request_cancelled_while_it_waits_still_has_its_answer_stored(
    migrated: tuple[str, SessionMaker],
) -> None:
    await a_request_cancelled_while_it_waits_still_has_its_answer_stored(*migrated)

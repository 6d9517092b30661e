"""The SQLite answer writer's one-statement insert stores what SQLAlchemy's insert would,
whole batches or nothing, and fails with SQLAlchemy's error types."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError, OperationalError

from twinloop.db.session import create_writer_sync_engine
from twinloop.inference import repository
from twinloop.inference.records import AnswerRecord
from twinloop.settings import Settings


@pytest.fixture
def engine(settings: Settings) -> Iterator[Engine]:
    engine = create_writer_sync_engine(settings.sqlalchemy_url)
    yield engine
    engine.dispose()


@pytest.fixture
def connect(engine: Engine) -> Iterator[Callable[[], sqlite3.Connection]]:
    """Connections of their own on the migrated test database, as the writer's: autocommit,
    foreign keys on."""
    opened: list[sqlite3.Connection] = []

    def plain() -> sqlite3.Connection:
        assert engine.url.database
        connection = sqlite3.connect(engine.url.database, isolation_level=None)
        connection.execute("PRAGMA foreign_keys=ON")
        opened.append(connection)
        return connection

    yield plain
    for connection in opened:
        connection.close()


def _record(question: str, **overrides: Any) -> AnswerRecord:
    fields: dict[str, Any] = {
        "route": "chat", "question": question, "answer": "Paris.", "domain": "general",
        "slot": "blue", "model": "m", "latency_ms": 12.5,
    }  # fmt: skip
    return AnswerRecord(**{**fields, **overrides})


def _stored(connection: sqlite3.Connection, ids: list[str]) -> list[tuple[Any, ...]]:
    """The rows of `ids`, every column but the id (which differs by design)."""
    columns = [row[1] for row in connection.execute("PRAGMA table_info(answers)")]
    named = ", ".join(column for column in columns if column != "id")
    marks = ", ".join("?" * len(ids))
    return connection.execute(f"SELECT {named} FROM answers WHERE id IN ({marks})", ids).fetchall()


def _count(connection: sqlite3.Connection) -> int:
    return int(connection.execute("SELECT count(*) FROM answers").fetchone()[0])


def test_a_row_is_stored_exactly_as_sqlalchemys_insert_stores_it(
    engine: Engine, connect: Callable[[], sqlite3.Connection]
) -> None:
    moment = datetime(2026, 12, 6, 11, 8, 26, 123456, tzinfo=UTC)
    every_column = {
        "route_score": 0.81, "user_id": "key:u1", "session_id": "s1", "is_preview": True,
        "prompt_tokens": 11, "completion_tokens": 3, "finish_reason": "stop", "role": "active",
        "safety_flags": [{"screen": "output", "rule": "email", "action": "redact", "count": 1}],
        "raw_answer": "Paris, a@b.c", "cached": True, "created_at": moment,
    }  # fmt: skip
    for overrides in (every_column, {"created_at": moment}):  # and the nulls and defaults
        ours, theirs = _record("Q?", **overrides), _record("Q?", **overrides)
        connection = connect()
        repository.SqliteAnswerRows(engine.dialect).insert(connection, [ours.row()])
        with engine.begin() as sqlalchemy:
            repository.insert_rows(sqlalchemy, [theirs.row()])

        [mine], [reference] = _stored(connection, [ours.id]), _stored(connection, [theirs.id])
        assert mine == reference


def test_a_batch_too_large_for_one_statement_is_split_and_stored_whole(
    engine: Engine, connect: Callable[[], sqlite3.Connection]
) -> None:
    connection = connect()
    connection.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 60)  # two rows per statement
    rows = repository.SqliteAnswerRows(engine.dialect)
    batch = [_record(f"Q{i}?") for i in range(5)]

    rows.insert(connection, [record.row() for record in batch])

    assert len(_stored(connection, [record.id for record in batch])) == 5
    assert not connection.in_transaction


def test_a_failing_row_stores_none_of_its_batch_and_raises_sqlalchemys_error(
    engine: Engine, connect: Callable[[], sqlite3.Connection]
) -> None:
    connection = connect()
    rows = repository.SqliteAnswerRows(engine.dialect)
    poisoned = _record("bad", snapshot_id="no-such-snapshot")  # a foreign key that fails
    for limit in (32766, 60):  # one statement; split, the failing row in the last statement
        connection.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, limit)
        batch = [_record(f"Q{i}?").row() for i in range(4)] + [poisoned.row()]

        with pytest.raises(IntegrityError):
            rows.insert(connection, batch)

        assert _count(connection) == 0 and not connection.in_transaction


def test_a_database_locked_by_another_writer_is_sqlalchemys_operational_error(
    engine: Engine, connect: Callable[[], sqlite3.Connection]
) -> None:
    holder, writer = connect(), connect()
    writer.execute("PRAGMA busy_timeout=0")
    holder.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(OperationalError):  # the gateway's 503 DatabaseUnavailableError
            repository.SqliteAnswerRows(engine.dialect).insert(writer, [_record("Q?").row()])
    finally:
        holder.execute("ROLLBACK")
    assert _count(writer) == 0

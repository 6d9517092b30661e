"""Queries for served answers. Flushes only, but for the SQLite answer writer's insert, a
transaction of its own (`SqliteAnswerRows`)."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Dialect, insert, select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession

from twinloop.db.models import Answer

# One statement object for every batch: its cache key is computed once, not per commit.
_INSERT_ANSWERS = insert(Answer)


def insert_rows(connection: Connection, rows: list[dict[str, Any]]) -> None:
    """Insert answers' rows (`AnswerRecord.row`) in one statement; the caller commits. Core,
    not the ORM's unit of work: nothing is read back, and a batch is one executemany.
    PostgreSQL's answer writer runs it through `AsyncConnection.run_sync`."""
    connection.execute(_INSERT_ANSWERS, rows)


class SqliteAnswerRows:
    """Answers' rows inserted into SQLite by the answer writer's thread, a batch as one
    multi-row `INSERT ... VALUES (...), (...)` on a plain sqlite3 connection in autocommit mode.

    Why not `insert_rows`: SQLAlchemy's executemany inside BEGIN ... COMMIT is a statement per
    row plus two, and sqlite3 gives up the GIL around each one; under load the thread then
    waits for the busy event loop at every step. Measured with bench/gateway_overhead.py at 8
    connections (cache hits, ~4 answers per batch): a batch took 2.6 ms of the writer's time
    (0.69 ms of CPU), a plain executemany in one transaction 2.3 ms, one statement 1.1 ms
    (0.41 ms of CPU). One statement is one transaction, so a batch is stored whole or not at
    all; one too large for SQLite's variable limit is split inside an explicit transaction.

    Values are converted by the column types' own bind processors for `dialect`, so a row is
    stored exactly as SQLAlchemy would store it (tests/unit/inference/test_repository.py).
    """

    def __init__(self, dialect: Dialect) -> None:
        columns = list(Answer.__table__.columns)
        quote = dialect.identifier_preparer.quote
        # Each column's key in a row and the bind processor its value goes through, if any.
        self._columns: tuple[tuple[str, Callable[[Any], Any] | None], ...] = tuple(
            (column.key, column.type.dialect_impl(dialect).bind_processor(dialect))
            for column in columns
        )
        names = ", ".join(quote(column.name) for column in columns)
        self._prefix = f"INSERT INTO {quote(Answer.__tablename__)} ({names}) VALUES "
        self._row = "(" + ", ".join("?" * len(columns)) + ")"
        self._statements: dict[int, str] = {}

    def insert(self, connection: sqlite3.Connection, rows: Sequence[dict[str, Any]]) -> None:
        """Insert `rows` and commit them together. `connection` must be in autocommit mode
        (`isolation_level=None`): the statement is its own transaction."""
        if not rows:
            return
        try:
            self._insert(connection, rows)
        except sqlite3.Error as e:
            # As SQLAlchemy raises it (IntegrityError, OperationalError, ...): the gateway's
            # error handlers, a locked database's 503 among them, see the same types.
            raise DBAPIError.instance(
                self._prefix + "...", None, e, sqlite3.Error, hide_parameters=True
            ) from e

    def _insert(self, connection: sqlite3.Connection, rows: Sequence[dict[str, Any]]) -> None:
        limit = connection.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
        per_statement = max(1, limit // len(self._columns))
        if len(rows) <= per_statement:
            connection.execute(self._statement(len(rows)), self._values(rows))
            return
        connection.execute("BEGIN")
        try:
            for start in range(0, len(rows), per_statement):
                chunk = rows[start : start + per_statement]
                connection.execute(self._statement(len(chunk)), self._values(chunk))
            connection.execute("COMMIT")
        except BaseException:
            if connection.in_transaction:
                connection.execute("ROLLBACK")
            raise

    def _statement(self, count: int) -> str:
        statement = self._statements.get(count)
        if statement is None:
            statement = self._statements[count] = self._prefix + ", ".join([self._row] * count)
        return statement

    def _values(self, rows: Sequence[dict[str, Any]]) -> list[Any]:
        values: list[Any] = []
        for row in rows:
            for key, process in self._columns:
                value = row[key]
                values.append(value if process is None else process(value))
        return values


async def safety_flags_since(
    session: AsyncSession, since: datetime, *, limit: int
) -> list[list[dict[str, Any]]]:
    """The safety flags of the latest `limit` answers since `since` that have any."""
    rows = await session.execute(
        select(Answer.safety_flags)
        .where(Answer.created_at >= since, Answer.safety_flags.is_not(None))
        .order_by(Answer.created_at.desc())
        .limit(limit)
    )
    return [flags for flags in rows.scalars() if flags]

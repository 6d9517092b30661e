"""Group commit of served answers: concurrent requests' answers in one transaction.

An answer is stored before its id is returned (feedback must never point at nothing), so
its commit is on the request path. Committed one by one, every request pays a commit (on
SQLite with `synchronous=FULL` an fsync, ~2-5 ms on a plain disk) and, behind the one
connection SQLite gets, waits for every commit before it. Here one writer takes whatever
answers are waiting, inserts them in one statement and commits once; each request awaits
its batch's commit. Nothing waits for a batch to fill: a lone request is committed at
once, and requests that arrive during a commit form the next batch, so the batch grows
exactly as fast as commits fall behind.

The writer has a connection of its own, so the reads and the other writes of the gateway
(releases, feedback, keys) never queue behind answers. A batch that fails fails every
request in it with the database's error: none is silently lost.

Two writers, one per kind of database (`answer_writer` picks), measured with
`bench/gateway_overhead.py` at 8 connections:

- SQLite: a thread of its own with a plain sqlite3 connection (`ThreadAnswerWriter`).
  Through aiosqlite a batch is half a dozen hops to its thread and back, each waiting its
  turn on a busy event loop (a commit took ~4 ms; storing was half the gateway's CPU per
  request); here it is one hop there and one callback back, and the batch is one statement
  (`repository.SqliteAnswerRows` says why).
- PostgreSQL: the async driver on the event loop (`LoopAnswerWriter`): network round trips
  awaited like any other I/O. A thread with psycopg served 11% fewer requests per second:
  each of its round trips waits for the GIL that the busy loop holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import sqlite3
import threading
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass

import structlog
from sqlalchemy import Engine, PoolProxiedConnection
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from twinloop.db.session import Synchronous, create_writer_engine, create_writer_sync_engine
from twinloop.inference import repository
from twinloop.inference.records import AnswerRecord
from twinloop.metrics import Metrics

log = structlog.get_logger(__name__)

_MAX_BATCH = 512


def answer_writer(
    url: str, *, metrics: Metrics, sqlite_synchronous: Synchronous = "FULL"
) -> AnswerWriter:
    """The writer for the database at `url` (an async SQLAlchemy URL), on a connection of its
    own that it closes in `aclose`."""
    if url.startswith("sqlite"):
        engine = create_writer_sync_engine(url, sqlite_synchronous=sqlite_synchronous)
        return ThreadAnswerWriter(engine=engine, metrics=metrics)
    return LoopAnswerWriter(engine=create_writer_engine(url), metrics=metrics)


@dataclass(frozen=True)
class _Waiting:
    row: dict[str, object]
    done: asyncio.Future[None]


class AnswerWriter(ABC):
    def __init__(self, *, metrics: Metrics, max_batch: int = _MAX_BATCH) -> None:
        self._metrics = metrics
        self._max_batch = max_batch

    async def store(self, record: AnswerRecord) -> None:
        """Until `record` is committed (its id and creation time are set here); raises the
        database's error if its batch failed."""
        row = record.row()
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._enqueue(_Waiting(row, done))
        # Not shielded, yet a request cancelled while it waits still has its answer committed:
        # the row is queued already, and cancelling cancels only `done`, which the batch's
        # resolution then skips (`_resolve`).
        await done

    @abstractmethod
    def _enqueue(self, waiting: _Waiting) -> None: ...

    @abstractmethod
    async def aclose(self) -> None:
        """Commit what is queued, then stop the writer and close its connection."""

    def _committed(self, size: int, started: float) -> None:
        self._metrics.answer_batches.labels("committed").inc()
        self._metrics.answer_batch_size.observe(size)
        self._metrics.answer_commit_seconds.observe(time.perf_counter() - started)

    def _failed(self, size: int, error: Exception) -> None:
        log.warning("answers not stored", answers=size, error=f"{type(error).__name__}: {error}")
        self._metrics.answer_batches.labels("failed").inc()


def _resolve(futures: list[asyncio.Future[None]], error: Exception | None) -> None:
    for done in futures:
        if done.done():  # cancelled: the request went away, its answer is stored all the same
            continue
        if error is None:
            done.set_result(None)
        else:
            done.set_exception(error)


# -- SQLite: a thread ----------------------------------------------------------------


class ThreadAnswerWriter(AnswerWriter):
    """Batches committed by a thread of its own on a synchronous connection. The answers
    stored in one turn of the event loop are handed over together (one wake-up of the
    thread), and each batch's requests are woken by one callback on the loop."""

    _STOP = None  # queued by `aclose`: the thread commits what is before it, then ends

    def __init__(self, *, engine: Engine, metrics: Metrics, max_batch: int = _MAX_BATCH) -> None:
        super().__init__(metrics=metrics, max_batch=max_batch)
        self._engine = engine
        self._queue: queue.SimpleQueue[list[_Waiting] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pending: list[_Waiting] = []  # stored in this turn of the loop, not yet handed
        self._rows = repository.SqliteAnswerRows(engine.dialect)
        self._connection: PoolProxiedConnection | None = None  # the thread's own
        self._driver: sqlite3.Connection | None = None  # its sqlite3 connection, autocommit

    def _enqueue(self, waiting: _Waiting) -> None:
        loop = asyncio.get_running_loop()
        if self._thread is None:
            self._loop = loop
            self._thread = threading.Thread(target=self._run, name="answer-writer", daemon=True)
            self._thread.start()
        if not self._pending:
            loop.call_soon(self._hand_over)
        self._pending.append(waiting)

    def _hand_over(self) -> None:
        pending, self._pending = self._pending, []
        if pending:
            self._queue.put(pending)

    async def aclose(self) -> None:
        thread, self._thread = self._thread, None
        if thread is not None:
            self._hand_over()
            self._queue.put(self._STOP)
            await asyncio.to_thread(thread.join)
        self._engine.dispose()

    def _run(self) -> None:
        waiting: list[_Waiting] = []
        try:
            stopping = False
            while waiting or not stopping:
                if not waiting:
                    handed = self._queue.get()
                    if handed is self._STOP:
                        return
                    waiting = handed
                while len(waiting) < self._max_batch and not stopping:
                    try:
                        handed = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if handed is self._STOP:
                        stopping = True
                    else:
                        waiting += handed
                batch, waiting = waiting[: self._max_batch], waiting[self._max_batch :]
                self._commit(batch)
        finally:
            self._drop_connection(invalidate=False)

    def _commit(self, batch: list[_Waiting]) -> None:
        started = time.perf_counter()
        error: Exception | None = None
        try:
            self._rows.insert(self._sqlite(), [waiting.row for waiting in batch])
        except Exception as e:
            error = e
            # The connection may be what failed: the next batch takes a new one.
            self._drop_connection(invalidate=True)
            self._failed(len(batch), e)
        else:
            self._committed(len(batch), started)
        assert self._loop is not None
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
            self._loop.call_soon_threadsafe(_resolve, [w.done for w in batch], error)

    def _sqlite(self) -> sqlite3.Connection:
        if self._driver is None:  # set and dropped together with `_connection`
            connection = self._engine.raw_connection()
            driver = connection.driver_connection
            if not isinstance(driver, sqlite3.Connection):
                connection.close()
                raise TypeError(f"the SQLite answer writer got a {type(driver).__name__}")
            self._connection, self._driver = connection, driver
        return self._driver

    def _drop_connection(self, *, invalidate: bool) -> None:
        connection, self._connection, self._driver = self._connection, None, None
        if connection is None:
            return
        try:
            if invalidate:
                connection.invalidate()
            connection.close()
        except Exception as e:  # already broken: nothing more to give back
            log.debug("writer connection not closed cleanly", error=f"{type(e).__name__}: {e}")


# -- PostgreSQL: the event loop --------------------------------------------------------


class LoopAnswerWriter(AnswerWriter):
    """Batches committed by one task on the event loop through the async driver."""

    def __init__(
        self, *, engine: AsyncEngine, metrics: Metrics, max_batch: int = _MAX_BATCH
    ) -> None:
        super().__init__(metrics=metrics, max_batch=max_batch)
        self._engine = engine
        self._queue: asyncio.Queue[_Waiting] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._connection: AsyncConnection | None = None

    def _enqueue(self, waiting: _Waiting) -> None:
        self._queue.put_nowait(waiting)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="answer-writer")

    async def aclose(self) -> None:
        if self._task is not None and not self._task.done():
            await self._queue.join()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._connection is not None:
            await self._connection.close()
            self._connection = None
        await self._engine.dispose()

    async def _run(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < self._max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                await self._commit(batch)
            finally:
                for _ in batch:
                    self._queue.task_done()

    async def _commit(self, batch: list[_Waiting]) -> None:
        started = time.perf_counter()
        try:
            if self._connection is None:
                self._connection = await self._engine.connect()
            async with self._connection.begin():
                await self._connection.run_sync(
                    repository.insert_rows, [waiting.row for waiting in batch]
                )
        except Exception as e:
            # The connection may be what failed: the next batch takes a new one.
            await self._drop_connection()
            self._failed(len(batch), e)
            _resolve([w.done for w in batch], e)
            return
        self._committed(len(batch), started)
        _resolve([w.done for w in batch], None)

    async def _drop_connection(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            with contextlib.suppress(Exception):
                await connection.invalidate()
                await connection.close()

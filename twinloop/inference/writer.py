"""Group commit of served answers: concurrent requests' answers in one transaction.

An answer is stored before its id is returned (feedback must never point at nothing), so
its commit is on the request path. Committed one by one, every request pays a commit (on
SQLite with `synchronous=FULL` an fsync, ~2-5 ms on a plain disk) and, behind the one
connection SQLite gets, waits for every commit before it. Here one writer task takes
whatever answers are waiting, inserts them in one statement and commits once; each
request awaits its batch's commit. Nothing waits for a batch to fill: a lone request is
committed at once, and requests that arrive during a commit form the next batch, so the
batch grows exactly as fast as commits fall behind.

The writer has a connection of its own (`create_writer_engine`), so the reads and the
other writes of the gateway (releases, feedback, keys) never queue behind answers. A batch
that fails fails every request in it with the database's error: none is silently lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

import structlog
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from twinloop.db.models import Answer
from twinloop.inference import repository
from twinloop.metrics import Metrics

log = structlog.get_logger(__name__)

_Waiting = tuple[dict[str, object], asyncio.Future[None]]


class AnswerWriter:
    def __init__(self, *, engine: AsyncEngine, metrics: Metrics, max_batch: int = 512) -> None:
        self._engine = engine
        self._metrics = metrics
        self._max_batch = max_batch
        self._queue: asyncio.Queue[_Waiting] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._connection: AsyncConnection | None = None

    async def store(self, record: Answer) -> None:
        """Until `record` is committed (its id and creation time are set here); raises the
        database's error if its batch failed."""
        row = repository.answer_row(record)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((row, done))
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="answer-writer")
        # Shielded: a request cancelled while it waits leaves its answer to be committed.
        await asyncio.shield(done)

    async def aclose(self) -> None:
        """Commit what is queued, then stop the writer and give its connection back."""
        if self._task is not None and not self._task.done():
            await self._queue.join()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._connection is not None:
            await self._connection.close()
            self._connection = None

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
                await repository.insert_rows(self._connection, [row for row, _ in batch])
        except Exception as e:
            # The connection may be what failed: the next batch takes a new one.
            await self._drop_connection()
            log.warning("answers not stored", answers=len(batch), error=f"{type(e).__name__}: {e}")
            self._metrics.answer_batches.labels("failed").inc()
            for _, done in batch:
                if not done.done():
                    done.set_exception(e)
            return
        self._metrics.answer_batches.labels("committed").inc()
        self._metrics.answer_batch_size.observe(len(batch))
        self._metrics.answer_commit_seconds.observe(time.perf_counter() - started)
        for _, done in batch:
            if not done.done():
                done.set_result(None)

    async def _drop_connection(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            with contextlib.suppress(Exception):
                await connection.invalidate()
                await connection.close()

"""One embedding per question on the request path: cached, micro-batched, off the event loop.

Routing and retrieval both need the question's embedding; `QueryEmbeddings.embed` computes
it once per question and both use the same vector. Questions asked concurrently are encoded
together: a transformer encodes a batch of 8 short sentences in little more time than one,
so under load one model call serves many requests instead of queueing them one by one
behind the model (issue 16: the router's global lock made 8 clients wait for each other).

Batching rule (the group commit of `twinloop.inference.writer`, with a short window): one
batch is encoded at a time, in a worker thread; questions that arrive meanwhile form the
next batch. When questions have been arriving concurrently, the worker also waits up to
`window_s` for more before it starts a batch (at most `max_batch`); a lone question on an
idle gateway is encoded at once, so it pays no window.

The cache is keyed on the normalised question (`normalise_question`); a repeated question
costs a dictionary lookup. An error of the model reaches every question of its batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import unicodedata
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from numpy.typing import NDArray

from twinloop.metrics import Metrics

DEFAULT_WINDOW_S = 0.002
DEFAULT_MAX_BATCH = 32
DEFAULT_CACHE_SIZE = 4096


class TextEmbedder(Protocol):
    def embed(self, texts: Sequence[str]) -> NDArray[np.float32]: ...


def normalise_question(text: str) -> str:
    """The question as caches compare it: Unicode NFC, runs of whitespace as one space, no
    leading or trailing space. Case is kept: a model may answer "US" and "us" differently."""
    return " ".join(unicodedata.normalize("NFC", text).split())


@dataclass
class _Pending:
    text: str
    future: asyncio.Future[NDArray[np.float32]]


class QueryEmbeddings:
    """Embeddings of single questions for the gateway (`embed`), batched and cached.

    Built in the gateway's lifespan and closed with `aclose` (its worker task needs the
    running loop, so it starts with the first question).
    """

    def __init__(
        self,
        embedder: TextEmbedder,
        *,
        window_s: float = DEFAULT_WINDOW_S,
        max_batch: int = DEFAULT_MAX_BATCH,
        cache_size: int = DEFAULT_CACHE_SIZE,
        metrics: Metrics | None = None,
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        self._embedder = embedder
        self._window_s = max(0.0, window_s)
        self._max_batch = max_batch
        self._cache_size = max(0, cache_size)
        self._cache: OrderedDict[str, NDArray[np.float32]] = OrderedDict()
        self._metrics = metrics
        self._queue: list[_Pending] = []
        # A question already queued or being encoded: a second asker shares its future.
        self._inflight: dict[str, asyncio.Future[NDArray[np.float32]]] = {}
        self._wakeup: asyncio.Event | None = None
        self._worker: asyncio.Task[None] | None = None
        self._busy = False
        self._arrived_while_busy = False
        self._concurrent = False

    async def embed(self, question: str) -> NDArray[np.float32]:
        """The question's unit embedding, shape `(dimension,)`, read-only (it is shared)."""
        key = normalise_question(question)
        cached = self._cache.get(key)
        if cached is not None:
            self._cache.move_to_end(key)
            self._count("hit")
            return cached
        self._count("miss")
        future = self._inflight.get(key)
        if future is None:
            future = asyncio.get_running_loop().create_future()
            self._inflight[key] = future
            self._queue.append(_Pending(key, future))
            if self._busy:
                self._arrived_while_busy = True
            self._start_worker().set()
        # Shielded: a caller that gives up must not cancel the answer others share.
        return await asyncio.shield(future)

    async def aclose(self) -> None:
        """Stop the worker; questions still queued fail with `RuntimeError`."""
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
            self._worker = None
        self._fail(self._queue, RuntimeError("query embeddings closed"))
        self._queue = []

    @property
    def cached(self) -> int:
        return len(self._cache)

    def _start_worker(self) -> asyncio.Event:
        if self._wakeup is None:
            self._wakeup = asyncio.Event()
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._run(self._wakeup), name="query-embeddings")
        return self._wakeup

    async def _run(self, wakeup: asyncio.Event) -> None:
        while True:
            await wakeup.wait()
            if self._concurrent and len(self._queue) < self._max_batch and self._window_s:
                await asyncio.sleep(self._window_s)
            batch, self._queue = self._queue[: self._max_batch], self._queue[self._max_batch :]
            if not self._queue:
                wakeup.clear()
            if not batch:
                continue
            self._busy, self._arrived_while_busy = True, False
            try:
                await self._encode(batch)
            finally:
                self._busy = False
            # Waiting for company pays only when questions keep arriving together.
            self._concurrent = self._arrived_while_busy or len(batch) > 1

    async def _encode(self, batch: list[_Pending]) -> None:
        started = time.perf_counter()
        try:
            vectors = await asyncio.to_thread(self._embedder.embed, [p.text for p in batch])
            if vectors.shape[0] != len(batch):
                raise ValueError(f"embedder returned {vectors.shape[0]} rows for {len(batch)}")
        except Exception as e:
            self._fail(batch, e)
            return
        if self._metrics is not None:
            self._metrics.embedding_batch_size.observe(len(batch))
            self._metrics.embedding_batch_seconds.observe(time.perf_counter() - started)
        for pending, row in zip(batch, vectors, strict=True):
            vector = np.array(row, dtype=np.float32)
            vector.setflags(write=False)
            self._remember(pending.text, vector)
            self._inflight.pop(pending.text, None)
            if not pending.future.done():
                pending.future.set_result(vector)

    def _remember(self, key: str, vector: NDArray[np.float32]) -> None:
        if not self._cache_size:
            return
        self._cache[key] = vector
        self._cache.move_to_end(key)
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)

    def _fail(self, batch: list[_Pending], error: BaseException) -> None:
        for pending in batch:
            self._inflight.pop(pending.text, None)
            if not pending.future.done():
                pending.future.set_exception(error)
                # Retrieved here too: a caller that already gave up must not leave an
                # "exception was never retrieved" warning behind.
                pending.future.exception()

    def _count(self, outcome: str) -> None:
        if self._metrics is not None:
            self._metrics.embedding_cache.labels(outcome).inc()

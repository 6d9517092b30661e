"""The request path's embeddings: concurrent questions share one model call, a repeated one
none, an error reaches every question of its batch."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence

import numpy as np
import pytest
from numpy.typing import NDArray

from rag.query_embeddings import QueryEmbeddings, normalise_question
from twinloop.metrics import Metrics

DIM = 4


class RecordingEmbedder:
    """Rows from the text's length; records every call's texts; can be held or made to fail."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []
        self.release = threading.Event()
        self.release.set()
        self.fail: Exception | None = None

    def embed(self, texts: Sequence[str]) -> NDArray[np.float32]:
        self.calls.append(list(texts))
        self.release.wait(timeout=5)
        if self.fail is not None:
            raise self.fail
        rows = np.zeros((len(texts), DIM), dtype=np.float32)
        for i, text in enumerate(texts):
            rows[i, len(text) % DIM] = 1.0
        return rows


def _sample(metrics: Metrics, name: str, labels: dict[str, str] | None = None) -> float:
    return metrics.registry.get_sample_value(name, labels or {}) or 0.0


async def test_concurrent_questions_are_encoded_in_one_call() -> None:
    embedder = RecordingEmbedder()
    metrics = Metrics()
    batcher = QueryEmbeddings(embedder, window_s=0.05, max_batch=32, metrics=metrics)
    embedder.release.clear()
    # The first question starts a batch at once (the model is idle); the next ones arrive
    # while it runs and are encoded together after it.
    first = asyncio.create_task(batcher.embed("q0"))
    await asyncio.sleep(0.05)
    rest = [asyncio.create_task(batcher.embed(f"question {i}")) for i in range(1, 9)]
    await asyncio.sleep(0.01)
    embedder.release.set()
    vectors = await asyncio.gather(first, *rest)

    assert embedder.calls == [["q0"], [f"question {i}" for i in range(1, 9)]]
    assert all(v.shape == (DIM,) for v in vectors)
    assert _sample(metrics, "twinloop_embedding_batch_size_count") == 2
    assert _sample(metrics, "twinloop_embedding_batch_size_sum") == 9
    await batcher.aclose()


async def test_a_batch_is_at_most_max_batch() -> None:
    embedder = RecordingEmbedder()
    batcher = QueryEmbeddings(embedder, window_s=0.0, max_batch=3)
    embedder.release.clear()
    first = asyncio.create_task(batcher.embed("hold"))
    await asyncio.sleep(0.05)
    rest = [asyncio.create_task(batcher.embed(f"q{i}")) for i in range(7)]
    await asyncio.sleep(0.01)
    embedder.release.set()
    await asyncio.gather(first, *rest)
    assert [len(call) for call in embedder.calls] == [1, 3, 3, 1]
    await batcher.aclose()


async def test_the_same_question_is_encoded_once_and_then_cached() -> None:
    embedder = RecordingEmbedder()
    metrics = Metrics()
    batcher = QueryEmbeddings(embedder, metrics=metrics)
    a, b = await asyncio.gather(batcher.embed("What is  a tort?"), batcher.embed("What is a tort?"))
    c = await batcher.embed(" What is a tort? ")

    assert embedder.calls == [["What is a tort?"]]
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, c)
    assert not c.flags.writeable  # shared between requests: nobody may change it
    assert _sample(metrics, "twinloop_embedding_cache_total", {"outcome": "hit"}) == 1
    await batcher.aclose()


async def test_the_cache_keeps_the_most_recent_questions() -> None:
    embedder = RecordingEmbedder()
    batcher = QueryEmbeddings(embedder, cache_size=2)
    for question in ("a", "b", "c", "a"):
        await batcher.embed(question)
    assert embedder.calls == [["a"], ["b"], ["c"], ["a"]]
    assert batcher.cached == 2
    await batcher.aclose()


async def test_an_error_reaches_every_question_of_its_batch_and_is_not_cached() -> None:
    embedder = RecordingEmbedder()
    batcher = QueryEmbeddings(embedder, window_s=0.0)
    embedder.release.clear()
    first = asyncio.create_task(batcher.embed("first"))
    await asyncio.sleep(0.05)
    embedder.fail = RuntimeError("model broke")
    waiting = [asyncio.create_task(batcher.embed(f"q{i}")) for i in range(3)]
    await asyncio.sleep(0.01)
    embedder.release.set()
    results = await asyncio.gather(first, *waiting, return_exceptions=True)

    assert all(isinstance(r, RuntimeError) and str(r) == "model broke" for r in results)
    embedder.fail = None
    assert (await batcher.embed("q0")).shape == (DIM,)  # asked again, encoded again
    assert embedder.calls[-1] == ["q0"]
    await batcher.aclose()


async def test_a_caller_that_gives_up_does_not_cancel_the_others() -> None:
    embedder = RecordingEmbedder()
    batcher = QueryEmbeddings(embedder)
    embedder.release.clear()
    impatient = asyncio.create_task(batcher.embed("same"))
    patient = asyncio.create_task(batcher.embed("same"))
    await asyncio.sleep(0.05)
    impatient.cancel()
    embedder.release.set()
    assert (await patient).shape == (DIM,)
    with pytest.raises(asyncio.CancelledError):
        await impatient
    await batcher.aclose()


def test_normalised_questions_differ_only_in_spacing() -> None:
    assert normalise_question("  Is\tthis\n fine? ") == "Is this fine?"
    assert normalise_question("Cafe\u0301") == "Caf\u00e9"
    assert normalise_question("US") != normalise_question("us")

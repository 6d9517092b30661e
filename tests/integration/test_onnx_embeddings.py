"""The ONNX backend is the same model: exported from the real all-MiniLM-L6-v2 folder, it
agrees with sentence-transformers sentence by sentence and routes the labelled set as well;
the gateway's micro-batcher gives the same vectors as one call per question."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from rag.backends import EmbeddingBackend, load_sentence_embedder
from rag.embeddings import Embedder
from rag.onnx_embeddings import OnnxEmbedder
from rag.query_embeddings import QueryEmbeddings
from twinloop.routing import DomainRouter, default_rules, evaluate
from twinloop.routing.evaluation import default_testset
from twinloop.testing.retrieval_check import fact_retrieval_set, recall_at
from twinloop.weights.prepare import resolve_embedding_model

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def model_dir() -> Path:
    return resolve_embedding_model(None)


@pytest.fixture(scope="module")
def onnx(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> OnnxEmbedder:
    cache = tmp_path_factory.mktemp("onnx")
    embedder = load_sentence_embedder(model_dir, EmbeddingBackend.ONNX, cache_dir=cache)
    assert isinstance(embedder, OnnxEmbedder)
    assert len(list(cache.glob("*.onnx"))) == 1  # exported once, into the given folder
    return embedder


@pytest.fixture(scope="module")
def onnx_int8(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> OnnxEmbedder:
    cache = tmp_path_factory.mktemp("onnx-int8")
    embedder = load_sentence_embedder(model_dir, EmbeddingBackend.ONNX_INT8, cache_dir=cache)
    assert isinstance(embedder, OnnxEmbedder)
    # The fp32 export and its int8 graph beside it, each made once.
    assert sorted(p.name.endswith("-int8.onnx") for p in cache.glob("*.onnx")) == [False, True]
    return embedder


@pytest.fixture(scope="module")
def torch_embedder(model_dir: Path) -> Embedder:
    return Embedder(model_dir)


def test_onnx_agrees_with_sentence_transformers(
    onnx: OnnxEmbedder, torch_embedder: Embedder
) -> None:
    texts = [item.question for item in default_testset()]
    texts += ["", "a" * 3000, "Kündigungsfrist für Mietverträge?"]  # empty, truncated, accents
    a, b = onnx.embed(texts), torch_embedder.embed(texts)
    assert a.shape == b.shape == (len(texts), torch_embedder.dimension)
    cosine = np.sum(a * b, axis=1)
    assert cosine.min() > 0.99, texts[int(np.argmin(cosine))]
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, rtol=1e-5)


def test_onnx_routes_the_labelled_set_as_well(onnx: OnnxEmbedder, torch_embedder: Embedder) -> None:
    labelled = default_testset()
    with_onnx = evaluate(DomainRouter(embedder=onnx, rules=default_rules()), labelled)
    with_torch = evaluate(DomainRouter(embedder=torch_embedder, rules=default_rules()), labelled)
    assert with_onnx.accuracy >= with_torch.accuracy, with_onnx.describe()


def test_the_int8_graph_agrees_with_sentence_transformers_and_routes_as_well(
    onnx_int8: OnnxEmbedder, torch_embedder: Embedder
) -> None:
    """What rag/backends.py says of it: the labelled set routed as well with the default
    rules (one question in 96 worse where the CPU's int8 products saturate: AVX2 without
    VNNI), vectors close to the model's (mean cosine 0.99; very short or degenerate text,
    0.97)."""
    labelled = default_testset()
    texts = [item.question for item in labelled] + ["", "a" * 3000, "Kündigungsfrist?"]
    a, b = onnx_int8.embed(texts), torch_embedder.embed(texts)
    cosine = np.sum(a * b, axis=1)
    assert cosine.mean() > 0.99
    assert cosine.min() > 0.97, texts[int(np.argmin(cosine))]
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, rtol=1e-5)
    with_int8 = evaluate(DomainRouter(embedder=onnx_int8, rules=default_rules()), labelled)
    with_torch = evaluate(DomainRouter(embedder=torch_embedder, rules=default_rules()), labelled)
    right_int8, right_torch = (round(r.accuracy * len(labelled)) for r in (with_int8, with_torch))
    assert right_int8 >= right_torch - 1, with_int8.describe()


def test_the_int8_graph_retrieves_as_well_as_the_fp32_one(
    onnx_int8: OnnxEmbedder, onnx: OnnxEmbedder
) -> None:
    """The facts' sentences found among distractors as often, by an index written with
    either graph (one written before a deployment chose int8). At most one right answer in
    100 leaves the top 3: what CPUs without VNNI lose (rag/backends.py)."""
    check = fact_retrieval_set()
    fp32_index, int8_index = onnx.embed(check.documents), onnx_int8.embed(check.documents)
    fp32_asked, int8_asked = onnx.embed(check.queries), onnx_int8.embed(check.queries)
    for k, tolerance in ((3, 0.01), (1, 0.02)):  # at most 1 and 2 in 100 moved below
        baseline = recall_at(fp32_asked, fp32_index, check.right, k)
        for index in (fp32_index, int8_index):
            assert recall_at(int8_asked, index, check.right, k) >= baseline - tolerance, k


def test_batched_questions_get_the_vectors_of_single_calls(onnx: OnnxEmbedder) -> None:
    questions = [item.question for item in default_testset()[:12]]

    async def batched() -> list[np.ndarray]:
        embeddings = QueryEmbeddings(onnx, window_s=0.01)
        try:
            return list(await asyncio.gather(*(embeddings.embed(q) for q in questions)))
        finally:
            await embeddings.aclose()

    together = np.stack(asyncio.run(batched()))
    alone = np.concatenate([onnx.embed([q]) for q in questions])
    # Padding to the batch's longest question must not change a shorter one's embedding.
    np.testing.assert_allclose(together, alone, atol=1e-5)
    router = DomainRouter(embedder=onnx, rules=default_rules())
    routed = [router.route_embedding(v).domain for v in together]
    assert routed == [r.domain for r in router.route_many(questions)]

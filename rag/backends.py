"""Which implementation of the embedding model a process loads: ONNX Runtime or torch.

torch and ONNX compute the same all-MiniLM-L6-v2 embeddings (cosine > 0.99 per sentence,
checked in tests/integration/test_onnx_embeddings.py). `auto` is ONNX Runtime, which
`bench/embeddings.py` measured faster than torch on the CPU this service was tuned on
(figures in its docstring), and falls back to sentence-transformers when the graph cannot
be exported or loaded, so a process always gets an embedder.

`onnx-int8` (the graph with int8 matrix products, `onnx_embeddings.quantize_onnx`) is
opt-in. Measured by `bench/embeddings.py`: 1.5-2.5x the fp32 graph; the 96 labelled
questions routed as well with the default rules (95.8%); on the made-up facts among 108
distractor paragraphs (`twinloop.testing.retrieval_check`) recall@3 1.00 like fp32 and
recall@1 0.94 against 0.95. How well depends on the CPU's int8 kernels: on an AMD EPYC
with AVX2 and no VNNI (2026-12-05), whose int8 products saturate 16-bit sums, the same
graph routed 94.8% (one labelled question more misrouted) and found 99 of 100 facts in
its own index's top 3; reduced-range or unsigned weights did no better there (93.8%,
94.8%). Two gateway workers on 2 cores beside PostgreSQL routed
`model: auto` at 535 req/s with it and 277 with fp32 (each fp32 batch reads 90 MB of
weights past the other worker's). Not the default because its vectors are further from
the model's (cosine 0.99 mean, 0.97 at worst on very short text), and what is tuned on
those vectors moves: a router-rules proposal that adds one exemplar routed 92.7% instead
of 95.8%, and the QA reference judge's calibrated similarity threshold came out 0.85
instead of the shipped 0.9 (tests/integration/test_router_proposals.py and
test_qa_judges.py fail with it). A deployment that routes most traffic with `model: auto`
may choose it, with its router rules and judge thresholds checked on it.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum
from pathlib import Path
from typing import Protocol

import numpy as np
import structlog
from numpy.typing import NDArray

from rag.embeddings import Embedder
from rag.onnx_embeddings import (
    OnnxEmbedder,
    export_onnx,
    int8_path_for,
    onnx_path_for,
    quantize_onnx,
)

log = structlog.get_logger(__name__)


class EmbeddingBackend(StrEnum):
    AUTO = "auto"
    ONNX = "onnx"
    ONNX_INT8 = "onnx-int8"
    """The ONNX graph with int8 matrix products (`onnx_embeddings.quantize_onnx`)."""
    TORCH = "torch"
    """sentence-transformers on torch."""


class SentenceEmbedder(Protocol):
    dimension: int

    def embed(self, texts: Sequence[str]) -> NDArray[np.float32]: ...


def load_onnx(
    model_dir: Path, cache_dir: Path, *, threads: int | None = None, int8: bool = False
) -> OnnxEmbedder:
    """The ONNX embedder, exporting the graph into `cache_dir` first if it is not there (and
    quantising it, for `int8`)."""
    path = onnx_path_for(model_dir, cache_dir)
    if not path.is_file():
        log.info("exporting the embedding model to ONNX (once)", model=str(model_dir), to=str(path))
        export_onnx(model_dir, path)
    if int8:
        fp32, path = path, int8_path_for(path)
        if not path.is_file():
            log.info("quantising the embedding model to int8 (once)", to=str(path))
            quantize_onnx(fp32, path)
    return OnnxEmbedder(model_dir, path, threads=threads)


def load_sentence_embedder(
    model_dir: Path,
    backend: EmbeddingBackend,
    *,
    cache_dir: Path,
    threads: int | None = None,
) -> SentenceEmbedder:
    """The embedder `backend` names. Blocking (seconds): call off the event loop."""
    if backend is EmbeddingBackend.TORCH:
        return Embedder(model_dir)
    if backend is EmbeddingBackend.ONNX:
        return load_onnx(model_dir, cache_dir, threads=threads)
    if backend is EmbeddingBackend.ONNX_INT8:
        return load_onnx(model_dir, cache_dir, threads=threads, int8=True)
    try:
        return load_onnx(model_dir, cache_dir, threads=threads)
    except Exception as e:  # auto: any failure of the faster path leaves the torch one
        log.warning(
            "ONNX embedding backend unavailable; using sentence-transformers",
            error=f"{type(e).__name__}: {e}",
        )
        return Embedder(model_dir)

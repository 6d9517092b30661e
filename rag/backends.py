"""Which implementation of the embedding model a process loads: ONNX Runtime or torch.

torch and ONNX compute the same all-MiniLM-L6-v2 embeddings (cosine > 0.99 per sentence,
checked in tests/integration/test_onnx_embeddings.py). `auto` is ONNX Runtime, which
`bench/embeddings.py` measured faster on the CPU this service was tuned on (figures in its
docstring), and falls back to sentence-transformers when the graph cannot be exported or
loaded, so a process always gets an embedder.

`onnx-int8` is opt-in: 2.2-2.5x fp32 ONNX and the labelled set routed as well, but its
vectors are further from the model's (cosine 0.99 mean, 0.97 at worst on very short
text), and on 108 passages searched with the 96 labelled questions its top 3 matched fp32's
85-90% of the time: a smaller, measured change in what retrieval finds, not none. Routing-
heavy gateways (`model: auto`) gain most; an index written with one backend is searched
best with the same one.
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

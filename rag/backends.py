"""Which implementation of the embedding model a process loads: ONNX Runtime or torch.

Both compute the same all-MiniLM-L6-v2 embeddings (cosine > 0.99 per sentence, checked in
tests/integration/test_onnx_embeddings.py). `auto` is the one `bench/embeddings.py`
measured faster on the CPU this service was tuned on, ONNX Runtime (figures in its
docstring), and falls back to sentence-transformers when the graph cannot be
exported or loaded, so a process always gets an embedder.
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
from rag.onnx_embeddings import OnnxEmbedder, export_onnx, onnx_path_for

log = structlog.get_logger(__name__)


class EmbeddingBackend(StrEnum):
    AUTO = "auto"
    ONNX = "onnx"
    TORCH = "torch"
    """sentence-transformers on torch."""


class SentenceEmbedder(Protocol):
    dimension: int

    def embed(self, texts: Sequence[str]) -> NDArray[np.float32]: ...


def load_onnx(model_dir: Path, cache_dir: Path, *, threads: int | None = None) -> OnnxEmbedder:
    """The ONNX embedder, exporting the graph into `cache_dir` first if it is not there."""
    path = onnx_path_for(model_dir, cache_dir)
    if not path.is_file():
        log.info("exporting the embedding model to ONNX (once)", model=str(model_dir), to=str(path))
        export_onnx(model_dir, path)
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
    try:
        return load_onnx(model_dir, cache_dir, threads=threads)
    except Exception as e:  # auto: any failure of the faster path leaves the torch one
        log.warning(
            "ONNX embedding backend unavailable; using sentence-transformers",
            error=f"{type(e).__name__}: {e}",
        )
        return Embedder(model_dir)

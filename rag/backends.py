"""Which implementation of the embedding model a process loads: ONNX Runtime or torch.

torch and ONNX compute the same all-MiniLM-L6-v2 embeddings (cosine > 0.99 per sentence,
checked in tests/integration/test_onnx_embeddings.py). `onnx-int8` is that ONNX graph with
int8 matrix products (`onnx_embeddings.quantize_onnx`).

`auto` is `onnx-int8`: `bench/embeddings.py` measured it 2.2-2.5x the fp32 graph (which is
itself several times torch one question at a time) on the CPU this service was tuned on,
routing the 96 labelled questions as well (95.8%) and retrieving as well: on the made-up
facts among 108 distractor paragraphs (`twinloop.testing.retrieval_check`), recall@3 1.00
for every backend, recall@1 0.95 (fp32, and int8 questions against an fp32-written index)
and 0.94 with int8 on both sides. Its vectors are further from the model's (cosine 0.99 mean,
0.97 at worst on very short text), so rankings among documents that do not answer the
question move more than among those that do. Its matrix weights are a quarter of the fp32 ones:
two gateway workers on 2 cores each running the fp32 graph served `model: auto` at 298 req/s
(each batch read 90 MB of weights past the other's), with int8 at 959.
`auto` falls back to fp32 ONNX when the quantisation fails and to sentence-transformers when
the export fails, so a process always gets an embedder.
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
    for int8 in (True, False):  # auto: the fastest path that loads
        try:
            return load_onnx(model_dir, cache_dir, threads=threads, int8=int8)
        except Exception as e:
            log.warning(
                "ONNX embedding backend unavailable; trying the next",
                graph="int8" if int8 else "fp32",
                error=f"{type(e).__name__}: {e}",
            )
    log.warning("using sentence-transformers for embeddings")
    return Embedder(model_dir)

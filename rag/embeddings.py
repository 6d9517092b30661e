"""The embedding model: a sentence-transformers folder loaded by path, offline, on CPU.

One `Embedder` is built at the entry point and shared (router, RAG). Loading
takes seconds, so it happens once, in the constructor; `embed` is synchronous
and CPU-bound, so async callers run it with `asyncio.to_thread`. torch and
sentence_transformers are imported inside the constructor: importing this
module stays cheap for code (and unit tests) that never embeds anything.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from twinloop.errors import ModelPreparationError

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer


class Embedder:
    """Sentence embeddings as float32 rows of unit L2 norm (so a dot product is a cosine)."""

    def __init__(self, model_dir: str | Path, *, batch_size: int = 64) -> None:
        folder = Path(model_dir).expanduser()
        if not folder.is_dir():
            raise ModelPreparationError(f"embedding model folder {folder} does not exist")
        # The model is a local folder: the hub must never be asked for anything. Setting the
        # variable covers libraries that read it lazily; `local_files_only` covers the rest.
        os.environ["HF_HUB_OFFLINE"] = "1"
        from sentence_transformers import SentenceTransformer

        self.model_dir = folder.resolve()
        self.batch_size = batch_size
        self._model: SentenceTransformer = SentenceTransformer(
            str(self.model_dir), device="cpu", local_files_only=True
        )
        dim = self._model.get_embedding_dimension()
        if dim is None:
            raise ModelPreparationError(f"{folder} does not say its embedding dimension")
        self.dimension: int = int(dim)
        # Hugging Face fast tokenizers are not safe to call from two threads at once
        # ("RuntimeError: Already borrowed", huggingface/tokenizers#537); calls arrive from
        # `asyncio.to_thread`, so they are serialised here.
        self._lock = threading.Lock()

    def embed(self, texts: Sequence[str]) -> NDArray[np.float32]:
        """One row per text, in order; shape `(len(texts), dimension)`."""
        if isinstance(texts, str):
            raise TypeError("embed() takes a sequence of texts, not one string")
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        with self._lock:
            raw: Any = self._model.encode(
                list(texts),
                batch_size=self.batch_size,
                convert_to_numpy=True,
                normalize_embeddings=True,
                show_progress_bar=False,
            )
        return np.ascontiguousarray(raw, dtype=np.float32)

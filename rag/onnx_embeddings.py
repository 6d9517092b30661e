"""The embedding model on ONNX Runtime: the same MiniLM, exported once, without torch at run time.

`export_onnx` turns the sentence-transformers folder (transformer, mean pooling, L2
normalisation) into one ONNX graph whose output is the sentence embedding itself, written
atomically into the data directory on first use (no network: the folder is local).
`OnnxEmbedder` tokenises with the folder's `tokenizer.json` (the Rust tokenizer the
sentence-transformers model uses) and runs the graph. Measured against sentence-transformers
on the same CPU by `bench/embeddings.py`; `rag.backends` picks between them.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from twinloop.errors import ModelPreparationError
from twinloop.files import fsync_dir

DEFAULT_MAX_LENGTH = 256
OPSET = 17
# Files whose bytes decide the exported graph: a changed model gets a new file name.
MODEL_FILES = ("config.json", "model.safetensors", "pytorch_model.bin", "tokenizer.json")


def onnx_path_for(model_dir: Path, cache_dir: Path) -> Path:
    """Where the export of `model_dir` lives: named by a digest of the model's files."""
    digest = hashlib.sha256()
    for name in MODEL_FILES:
        path = model_dir / name
        if path.is_file():
            stat = path.stat()
            digest.update(f"{name}:{stat.st_size}:{int(stat.st_mtime)}".encode())
    return cache_dir / f"{model_dir.name}-{digest.hexdigest()[:16]}.onnx"


def int8_path_for(fp32_path: Path) -> Path:
    """Where the int8 graph quantised from `fp32_path` lives (`quantize_onnx`)."""
    return fp32_path.with_name(f"{fp32_path.stem}-int8.onnx")


def quantize_onnx(fp32_path: Path, out: Path) -> Path:
    """The exported graph with int8 weights in its matrix products, one scale per output
    channel (activations quantised as it runs), written atomically to `out`.

    Why these choices, measured on the 96 labelled routing questions (2 cores): per-tensor
    int8 routed 92.7% (fp32 95.8%); per-channel int8 on every quantisable op 94.8%; per-channel
    on matrix products only 95.8%, with a cosine of at least 0.991 to the fp32 graph's
    vectors, and about half its time for one question on one thread (1.5 against 2.9 ms).
    Blocking, seconds.
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        quantize_dynamic(
            fp32_path,
            tmp,
            per_channel=True,
            weight_type=QuantType.QInt8,
            op_types_to_quantize=["MatMul"],
        )
        os.replace(tmp, out)
        fsync_dir(out.parent)
    finally:
        tmp.unlink(missing_ok=True)
    return out


def _max_length(model_dir: Path) -> int:
    config = model_dir / "sentence_bert_config.json"
    if config.is_file():
        value = json.loads(config.read_text("utf-8")).get("max_seq_length")
        if isinstance(value, int) and value > 0:
            return value
    return DEFAULT_MAX_LENGTH


def _check_pooling(model_dir: Path) -> None:
    """Only mean pooling is exported; refuse a folder that pools otherwise."""
    config = model_dir / "1_Pooling" / "config.json"
    if not config.is_file():
        return
    pooling = json.loads(config.read_text("utf-8"))
    if not pooling.get("pooling_mode_mean_tokens") or any(
        pooling.get(k)
        for k in (
            "pooling_mode_cls_token",
            "pooling_mode_max_tokens",
            "pooling_mode_mean_sqrt_len_tokens",
        )
    ):
        raise ModelPreparationError(f"{model_dir}: only mean pooling can be exported to ONNX")


def export_onnx(model_dir: Path, out: Path) -> Path:
    """Export the folder's transformer with mean pooling and normalisation to `out`.

    Blocking, seconds; torch and transformers are imported here only.
    """
    _check_pooling(model_dir)
    os.environ["HF_HUB_OFFLINE"] = "1"
    import torch
    from transformers import AutoModel

    model = AutoModel.from_pretrained(str(model_dir), local_files_only=True)
    model.eval()

    class SentenceEmbedding(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(
            self,
            input_ids: torch.Tensor,
            attention_mask: torch.Tensor,
            token_type_ids: torch.Tensor,
        ) -> torch.Tensor:
            tokens = self.model(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            ).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(tokens.dtype)
            mean = (tokens * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(mean, p=2.0, dim=1)

    sample = torch.ones((2, 8), dtype=torch.int64)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    axes = {0: "batch", 1: "tokens"}
    try:
        # The TorchScript exporter (`dynamo=False`): the torch.export-based default needs
        # onnxscript, which nothing else here uses. It warns that it is deprecated and that
        # traced shape checks become constants (true for this graph: batch and length are
        # dynamic axes, checked against sentence-transformers in
        # tests/integration/test_onnx_embeddings.py). Silenced here only; move to
        # `dynamo=True` when torch drops the TorchScript exporter.
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                SentenceEmbedding(),
                (sample, sample, torch.zeros_like(sample)),
                str(tmp),
                input_names=["input_ids", "attention_mask", "token_type_ids"],
                output_names=["sentence_embedding"],
                dynamic_axes={
                    "input_ids": axes,
                    "attention_mask": axes,
                    "token_type_ids": axes,
                    "sentence_embedding": {0: "batch"},
                },
                opset_version=OPSET,
                dynamo=False,
            )
        # Renamed into place: a reader (another worker) sees no graph or a whole one.
        os.replace(tmp, out)
        fsync_dir(out.parent)
    finally:
        tmp.unlink(missing_ok=True)
    return out


class OnnxEmbedder:
    """Sentence embeddings as float32 rows of unit L2 norm, from an exported graph."""

    def __init__(
        self, model_dir: str | Path, onnx_file: str | Path, *, threads: int | None = None
    ) -> None:
        folder = Path(model_dir).expanduser()
        if not (folder / "tokenizer.json").is_file():
            raise ModelPreparationError(f"{folder} has no tokenizer.json for the ONNX backend")
        import onnxruntime
        from tokenizers import Tokenizer

        self.model_dir = folder.resolve()
        self._tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self._tokenizer.enable_truncation(max_length=_max_length(folder))
        self._tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")
        options = onnxruntime.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        # ONNX Runtime's pool threads spin after each run by default, waiting for the next;
        # in a gateway that spinning takes the cores the event loop needs between batches.
        # Measured and not taken (2026-12-06, 2 cores): spinning only within a run
        # (`session.force_spinning_stop`) encodes a lone question in 3.0 ms instead of 4.1,
        # but `model: auto` in bench/gateway_overhead.py did not move beyond its noise; nor
        # did two batches at once on one thread each (fewer req/s at 8 connections).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self._session: Any = onnxruntime.InferenceSession(
            str(onnx_file), sess_options=options, providers=["CPUExecutionProvider"]
        )
        self._inputs = {i.name for i in self._session.get_inputs()}
        self.dimension: int = int(self._session.get_outputs()[0].shape[-1])
        # The Rust tokenizer's padding settings are shared state: one caller at a time
        # (huggingface/tokenizers#537); the session itself may run concurrently.
        self._lock = threading.Lock()

    def embed(self, texts: Sequence[str]) -> NDArray[np.float32]:
        """One row per text, in order; shape `(len(texts), dimension)`."""
        if isinstance(texts, str):
            raise TypeError("embed() takes a sequence of texts, not one string")
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        with self._lock:
            encodings = self._tokenizer.encode_batch(list(texts))
        feeds = {
            "input_ids": np.asarray([e.ids for e in encodings], dtype=np.int64),
            "attention_mask": np.asarray([e.attention_mask for e in encodings], dtype=np.int64),
            "token_type_ids": np.asarray([e.type_ids for e in encodings], dtype=np.int64),
        }
        (vectors,) = self._session.run(None, {k: v for k, v in feeds.items() if k in self._inputs})
        return np.ascontiguousarray(vectors, dtype=np.float32)

"""The embedding model's backends side by side: sentence-transformers (torch), ONNX Runtime
(fp32) and ONNX Runtime on the int8 graph.

For each backend: embeddings per second one question per call (the request path before
micro-batching), in batches of 8 and 32 (what `rag.query_embeddings` hands the model under
load), through `QueryEmbeddings` with 1 and 8 concurrent askers (distinct questions, so the
cache never answers), the routing accuracy of the default rules on the labelled set, and the
agreement of the ONNX backends with torch (cosine of the same sentence). `rag.backends`
says which one `auto` is and why.

Run: ``.venv/bin/python bench/embeddings.py [--seconds 3]``

Measured here (2026-12-05, a quiet 2-core x86_64 box; embeddings/s, 3 s each; ONNX
Runtime on its default threads):

    backend      1/call   8/call  32/call  micro x1  micro x8  accuracy
    torch           153      397      506        80       259     0.958
    onnx            303      426      458       248       358     0.958
    onnx-int8       454      728      964       424       602     0.958
    onnx against torch on 96 labelled questions: cosine min 1.000000, mean 1.000000
    onnx-int8 against torch on 96 labelled questions: cosine min 0.991369, mean 0.994550
    retrieval: 100 questions, 128 documents (twinloop.testing.retrieval_check)
      questions torch      index torch      recall@1 0.950  recall@3 1.000
      questions onnx       index onnx       recall@1 0.950  recall@3 1.000
      questions onnx-int8  index onnx-int8  recall@1 0.940  recall@3 1.000
      questions onnx-int8  index onnx       recall@1 0.950  recall@3 1.000

`1/call` runs on the calling thread, `micro` through `QueryEmbeddings` (a worker thread, as
in the gateway). The int8 graph (`rag.onnx_embeddings.quantize_onnx`: per-channel int8
matrix products) is 1.5-2.1x the fp32 one here (2.2-2.5x in an earlier run on one thread),
routes the labelled set as well with the default rules and retrieves as well; it is
opt-in, and `rag.backends` says why it is not `auto` (what is tuned on fp32 vectors moves).
Per-tensor int8 routed 92.7%: `quantize_onnx` says what was tried. An earlier run (load
average 6.6 from other work) put fp32 ONNX at 2-20x torch one question at a time; in the
gateway (bench/gateway_overhead.py, one run each) `model: auto` at 8 connections went from
26 req/s (sentence-transformers under the router's lock) to 218-449 req/s with fp32 ONNX.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import asyncio
import os
import platform
import tempfile
import time
from collections.abc import Callable

import numpy as np

from rag.backends import EmbeddingBackend, SentenceEmbedder, load_sentence_embedder
from rag.query_embeddings import QueryEmbeddings
from twinloop.routing import DomainRouter, default_rules, evaluate
from twinloop.routing.evaluation import default_testset
from twinloop.testing.retrieval_check import fact_retrieval_set, recall_at
from twinloop.weights.prepare import resolve_embedding_model


def _questions(n: int) -> list[str]:
    base = [item.question for item in default_testset()]
    return [f"{base[i % len(base)]} ({i})" for i in range(n)]


def _rate(call: Callable[[list[str]], object], batch: int, seconds: float) -> float:
    """Texts per second, calling `call` with `batch` fresh texts until `seconds` pass."""
    texts = _questions(4096)
    call(texts[:batch])  # warm-up
    done, started, i = 0, time.perf_counter(), 0
    while time.perf_counter() - started < seconds:
        chunk = [texts[(i + j) % len(texts)] for j in range(batch)]
        call(chunk)
        done += batch
        i += batch
    return done / (time.perf_counter() - started)


async def _concurrent_rate(embedder: SentenceEmbedder, askers: int, seconds: float) -> float:
    """Questions per second through QueryEmbeddings with `askers` concurrent callers."""
    batched = QueryEmbeddings(embedder, cache_size=0)
    texts = _questions(100_000)
    counter = iter(range(len(texts)))
    deadline = time.perf_counter() + seconds
    done = 0

    async def ask() -> None:
        nonlocal done
        while time.perf_counter() < deadline:
            await batched.embed(texts[next(counter)])
            done += 1

    started = time.perf_counter()
    await asyncio.gather(*(ask() for _ in range(askers)))
    elapsed = time.perf_counter() - started
    await batched.aclose()
    return done / elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="per measurement")
    args = parser.parse_args(argv)
    model_dir = resolve_embedding_model(None)
    cache_dir = Path(tempfile.gettempdir()) / "twinloop-bench-onnx"
    print(
        f"machine: {os.cpu_count()} logical core(s), {platform.machine()}, "
        f"Python {platform.python_version()}; load average {os.getloadavg()[0]:.2f}; "
        f"model {model_dir.name}; {args.seconds:.0f}s per figure"
    )
    embedders: dict[str, SentenceEmbedder] = {}
    for backend in (EmbeddingBackend.TORCH, EmbeddingBackend.ONNX, EmbeddingBackend.ONNX_INT8):
        started = time.perf_counter()
        embedders[backend.value] = load_sentence_embedder(model_dir, backend, cache_dir=cache_dir)
        print(f"{backend.value}: loaded in {time.perf_counter() - started:.1f}s")
    header = (
        f"{'backend':<10} {'1/call':>8} {'8/call':>8} {'32/call':>8} "
        f"{'micro x1':>9} {'micro x8':>9} {'accuracy':>9}   (embeddings/s)"
    )
    print(header + "\n" + "-" * len(header))
    labelled = default_testset()
    for name, embedder in embedders.items():
        single = _rate(embedder.embed, 1, args.seconds)
        eight = _rate(embedder.embed, 8, args.seconds)
        batch32 = _rate(embedder.embed, 32, args.seconds)
        micro1 = asyncio.run(_concurrent_rate(embedder, 1, args.seconds))
        micro8 = asyncio.run(_concurrent_rate(embedder, 8, args.seconds))
        accuracy = evaluate(DomainRouter(embedder=embedder, rules=default_rules()), labelled)
        print(
            f"{name:<10} {single:>8.0f} {eight:>8.0f} {batch32:>8.0f} "
            f"{micro1:>9.0f} {micro8:>9.0f} {accuracy.accuracy:>9.3f}"
        )
    texts = [item.question for item in labelled]
    reference = embedders["torch"].embed(texts)
    for name in ("onnx", "onnx-int8"):
        cosine = np.sum(reference * embedders[name].embed(texts), axis=1)
        print(
            f"{name} against torch on {len(texts)} labelled questions: cosine min "
            f"{cosine.min():.6f}, mean {cosine.mean():.6f}"
        )
    _print_retrieval(embedders)
    return 0


def _print_retrieval(embedders: dict[str, SentenceEmbedder]) -> None:
    """Recall on the made-up facts among distractors, each backend on both sides, and int8
    questions against an index written with the fp32 graph (what a switch of `auto` meets)."""
    check = fact_retrieval_set()
    print(
        f"retrieval: {len(check.queries)} questions, {len(check.documents)} documents "
        "(twinloop.testing.retrieval_check)"
    )
    documents = {name: e.embed(check.documents) for name, e in embedders.items()}
    queries = {name: e.embed(check.queries) for name, e in embedders.items()}
    pairs = [(name, name) for name in embedders] + [("onnx-int8", "onnx")]
    for asked, written in pairs:
        r1 = recall_at(queries[asked], documents[written], check.right, 1)
        r3 = recall_at(queries[asked], documents[written], check.right, 3)
        print(f"  questions {asked:<10} index {written:<10} recall@1 {r1:.3f}  recall@3 {r3:.3f}")


if __name__ == "__main__":
    sys.exit(main())

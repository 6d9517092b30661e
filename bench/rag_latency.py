"""Retrieval store throughput and latency: ingestion chunks/s and query percentiles vs size.

Self-contained and loopback-only: starts its own Chroma server (`rag.server.ChromaServer`)
in a temporary data directory on a free port, loads the bundled embedding model, and
talks to Chroma through `rag.store.KnowledgeStore` exactly as the service does. Both are
stopped and the directory removed at the end, on Ctrl-C and on SIGTERM too.

Documents are synthetic but varied (templated sentences about made-up people, places
and numbers, seeded RNG), each exactly `--chunks-per-doc` chunks at the configured
chunk size. Every batch of `--batch-docs` documents is added at a new RAG version, so
the version filter has something to select. Documents are added one at a time, as the
ingestion path does (embed, then delete/get/add in Chroma).

Measured:
  ingestion  wall time of `add_document()` per size step; the embedding share is the
             time spent inside `Embedder.embed` during those same calls (timed by a
             wrapper around the embedder, not a second embedding pass).
  queries    per-call wall time of `query()` (top_k, current version, then older
             versions), and of the `Embedder.embed` call inside it; the rest is
             Chroma (HTTP + filter + HNSW) and result decoding.

    .venv/bin/python bench/rag_latency.py --sizes 1000,10000 --queries 200 --batch-docs 20

The recall column is low by the data, not by the store (checked 2026-12-05): each chunk
holds three or four templated sentences told apart only by made-up names ("Where did
Vennorsha Losilnor open a brewery?"), and MiniLM's embedding barely sees made-up names.
On the same 1,000 chunks an exact search of the embeddings in memory (no Chroma, no
version filter) finds the right document in the top 3 for 19% of 200 questions, as the
store does, while counting the capitalised words a chunk shares with the question finds
94.5%. On real sentences the embedding retrieves well (`twinloop.testing.retrieval_check`,
printed by bench/embeddings.py: recall@3 1.00). Questions about rare names are where a
lexical signal beside the embedding would pay.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import asyncio
import os
import random
import signal
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from bench.results import add_json_option, latency_summary, write_results
from rag.chunking import chunk_text
from rag.embeddings import Embedder
from rag.server import ChromaServer
from rag.store import KnowledgeStore, close_chroma, connect_chroma
from twinloop.settings import RagSettings, Settings
from twinloop.testing.ports import free_port
from twinloop.testing.stats import percentile
from twinloop.weights.prepare import resolve_embedding_model

DOMAIN = "benchrag"
WARMUP_QUERIES = 5

_SYLLABLES = [
    "ka", "lo", "mi", "ra", "ven", "tor", "sil", "da", "nor", "bex", "qui", "zan",
    "mar", "el", "th", "ost", "run", "fe", "gal", "ip", "dro", "sha", "wen", "yul",
]  # fmt: skip
_TRADES = [
    "bakery", "shipyard", "observatory", "tannery", "bookbindery", "glassworks", "orchard",
    "clinic", "brewery", "printing house", "foundry", "weaving mill", "apothecary", "archive",
]  # fmt: skip
_MATERIALS = ["copper", "cedar", "granite", "wool", "saffron", "salt", "amber", "tin", "indigo"]


@dataclass(frozen=True)
class Fact:
    """One generated fact and the question that should retrieve it."""

    doc_id: str
    version: int
    question: str


@dataclass
class Corpus:
    """Generates documents; remembers the facts each one holds."""

    rng: random.Random
    chunk_size: int
    chunk_overlap: int
    chunks_per_doc: int
    facts: list[Fact] = field(default_factory=list)
    _used_names: set[str] = field(default_factory=set)

    def _word(self, low: int, high: int) -> str:
        return "".join(self.rng.choice(_SYLLABLES) for _ in range(self.rng.randint(low, high)))

    def _name(self) -> str:
        while True:
            name = f"{self._word(2, 3).capitalize()} {self._word(2, 4).capitalize()}"
            if name not in self._used_names:
                self._used_names.add(name)
                return name

    def _sentence(self, doc_id: str, version: int) -> str:
        r = self.rng
        person, place = self._name(), self._word(2, 4).capitalize()
        year, n = r.randint(1650, 2020), r.randint(3, 9_000)
        trade, material = r.choice(_TRADES), r.choice(_MATERIALS)
        kind = r.randrange(4)
        if kind == 0:
            text = f"In {year}, {person} opened a {trade} in {place} that employed {n} workers."
            question = f"Where did {person} open a {trade}?"
        elif kind == 1:
            text = (
                f"The town of {place} traded {n} tonnes of {material} a year until "
                f"{person} became its mayor in {year}."
            )
            question = f"Who became mayor of {place}?"
        elif kind == 2:
            text = (
                f"{person} walked {n} kilometres from {place} to deliver {material} "
                f"to the {trade} of a cousin."
            )
            question = f"How far did {person} walk from {place}?"
        else:
            text = (
                f"Records from {place} show that {person} was born there in {year} and "
                f"kept {n} ledgers about {material}."
            )
            question = f"When was {person} born in {place}?"
        self.facts.append(Fact(doc_id=doc_id, version=version, question=question))
        return text

    def document(self, doc_id: str, version: int) -> str:
        """A document of exactly `chunks_per_doc` chunks at the configured chunk size."""
        mark = len(self.facts)
        sentences: list[str] = []
        while True:
            if sentences and self.rng.random() < 0.2:
                sentences.append("\n\n")  # paragraph break
            sentences.append(self._sentence(doc_id, version))
            text = " ".join(sentences)
            n = len(chunk_text(text, size=self.chunk_size, overlap=self.chunk_overlap))
            if n > self.chunks_per_doc:
                sentences.pop()
                del self.facts[-1]
                break
        text = " ".join(sentences)
        assert len(chunk_text(text, size=self.chunk_size, overlap=self.chunk_overlap)) == (
            self.chunks_per_doc
        ), "document generation overshot"
        assert len(self.facts) > mark
        return text


class TimedEmbedder:
    """The real embedder, with the wall time of each `embed` call recorded."""

    def __init__(self, inner: Embedder) -> None:
        self._inner = inner
        self._lock = threading.Lock()
        self.calls: list[float] = []

    def embed(self, texts: Sequence[str]) -> NDArray[np.float32]:
        started = time.perf_counter()
        try:
            return self._inner.embed(texts)
        finally:
            elapsed = time.perf_counter() - started
            with self._lock:
                self.calls.append(elapsed)

    def take(self) -> list[float]:
        with self._lock:
            calls, self.calls = self.calls, []
        return calls


@dataclass
class QueryTimings:
    total_ms: list[float] = field(default_factory=list)
    embed_ms: list[float] = field(default_factory=list)
    hits: int = 0


def _sizes(value: str) -> list[int]:
    sizes = [int(part) for part in value.split(",") if part.strip()]
    if not sizes or any(s <= 0 for s in sizes) or sizes != sorted(set(sizes)):
        raise argparse.ArgumentTypeError("sizes must be positive and strictly increasing")
    return sizes


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--sizes", type=_sizes, default=[1000, 10_000], help="chunk counts to measure at"
    )
    parser.add_argument("--queries", type=int, default=200, help="timed queries per variant")
    parser.add_argument(
        "--batch-docs", type=int, default=20, help="documents per add batch (one version each)"
    )
    parser.add_argument("--chunks-per-doc", type=int, default=5)
    parser.add_argument("--top-k", type=int, default=3)
    parser.add_argument("--seed", type=int, default=1234)
    add_json_option(parser)
    args = parser.parse_args(argv)
    if args.queries <= 0 or args.batch_docs <= 0 or args.chunks_per_doc <= 0 or args.top_k <= 0:
        parser.error("--queries, --batch-docs, --chunks-per-doc and --top-k must be positive")
    return args


def _row(label: str, values_ms: Sequence[float]) -> str:
    return (
        f"  {label:<28}{percentile(values_ms, 0.5):>9.1f}{percentile(values_ms, 0.9):>9.1f}"
        f"{percentile(values_ms, 0.99):>9.1f}"
    )


async def _run_queries(
    store: KnowledgeStore,
    embedder: TimedEmbedder,
    facts: list[Fact],
    *,
    version: int,
    count: int,
    top_k: int,
    rng: random.Random,
) -> QueryTimings:
    visible = [f for f in facts if f.version <= version]
    timings = QueryTimings()
    for i in range(WARMUP_QUERIES + count):
        fact = rng.choice(visible)
        embedder.take()
        started = time.perf_counter()
        results = await store.query(
            domain=DOMAIN, question=fact.question, version=version, top_k=top_k
        )
        elapsed = time.perf_counter() - started
        embed_calls = embedder.take()
        if i < WARMUP_QUERIES:
            continue
        timings.total_ms.append(elapsed * 1000)
        timings.embed_ms.append(sum(embed_calls) * 1000)
        timings.hits += any(r.doc_id == fact.doc_id for r in results)
    return timings


async def _bench(
    args: argparse.Namespace, settings: Settings, embedder: TimedEmbedder
) -> list[dict[str, Any]]:
    """Ingest up to each size, then time queries there; per size, what REPORT.md shows."""
    rag = settings.rag
    client = await connect_chroma(rag)
    try:
        store = KnowledgeStore(client=client, embedder=embedder)
        corpus = Corpus(
            rng=random.Random(args.seed),
            chunk_size=rag.chunk_chars,
            chunk_overlap=rag.chunk_overlap,
            chunks_per_doc=args.chunks_per_doc,
        )
        query_rng = random.Random(args.seed + 1)
        chunks = docs = version = 0
        sizes: list[dict[str, Any]] = []
        for size in args.sizes:
            # -- ingestion up to `size` chunks ----------------------------------------
            step_chunks, step_docs, step_versions = 0, 0, 0
            step_wall = step_embed = step_gen = 0.0
            while chunks < size:
                version += 1
                step_versions += 1
                for _ in range(args.batch_docs):
                    if chunks >= size:
                        break
                    doc_id = f"doc-{docs:06d}"
                    gen_started = time.perf_counter()
                    text = corpus.document(doc_id, version)
                    step_gen += time.perf_counter() - gen_started
                    embedder.take()
                    started = time.perf_counter()
                    added = await store.add_document(
                        domain=DOMAIN,
                        doc_id=doc_id,
                        text=text,
                        source=f"synthetic/{doc_id}.txt",
                        version=version,
                        chunk_size=rag.chunk_chars,
                        chunk_overlap=rag.chunk_overlap,
                    )
                    step_wall += time.perf_counter() - started
                    step_embed += sum(embedder.take())
                    chunks += added
                    step_chunks += added
                    step_docs += 1
                    docs += 1
            stored = await store.count(DOMAIN)
            print(f"\n== {stored} chunks stored ({docs} documents, versions 1..{version}) ==")
            print(
                f"ingestion of the last {step_chunks} chunks ({step_docs} docs,"
                f" {step_versions} versions): {step_wall:.1f} s in add_document(), "
                f"{step_chunks / step_wall:.1f} chunks/s"
            )
            print(
                f"  embedding (Embedder.embed inside those calls): {step_embed:.1f} s = "
                f"{100 * step_embed / step_wall:.0f}% of the time, "
                f"{step_chunks / step_embed:.1f} chunks/s alone"
            )
            chroma_s = step_wall - step_embed
            print(
                f"  Chroma + chunking (the rest): {chroma_s:.1f} s = "
                f"{100 * chroma_s / step_wall:.0f}%, "
                f"{1000 * chroma_s / step_docs:.1f} ms per "
                f"document; document generation (not counted) {step_gen:.1f} s"
            )

            # -- queries at this size -------------------------------------------------
            variants = [("current", version)]
            if version >= 3:
                variants.append(("middle", (version + 1) // 2))
            if version >= 2:
                variants.append(("oldest", 1))
            print(
                f"query latency, {args.queries} queries per row (+{WARMUP_QUERIES} warm-up), "
                f"top_k={args.top_k}, questions from facts visible at that version"
            )
            print(f"  {'ms':<28}{'p50':>9}{'p90':>9}{'p99':>9}   recall@{args.top_k}")
            queries: dict[str, Any] = {}
            for label, at in variants:
                visible_chunks = min(chunks, at * args.batch_docs * args.chunks_per_doc)
                timings = await _run_queries(
                    store,
                    embedder,
                    corpus.facts,
                    version=at,
                    count=args.queries,
                    top_k=args.top_k,
                    rng=query_rng,
                )
                rest = [t - e for t, e in zip(timings.total_ms, timings.embed_ms, strict=True)]
                recall = 100 * timings.hits / len(timings.total_ms)
                print(f"  version {at} ({label}, {visible_chunks} of {chunks} chunks visible)")
                print(_row("  query() end to end", timings.total_ms) + f"   {recall:.0f}%")
                print(_row("  embedding part", timings.embed_ms))
                print(_row("  rest (Chroma, filter)", rest))
                queries[label] = {
                    "version": at,
                    "visible_chunks": visible_chunks,
                    "recall": recall / 100,
                    "end_to_end": latency_summary(timings.total_ms),
                    "embedding": latency_summary(timings.embed_ms),
                    "chroma": latency_summary(rest),
                }
            sizes.append(
                {
                    "chunks": stored,
                    "ingest_chunks_per_s": step_chunks / step_wall if step_wall else None,
                    "queries": queries,
                }
            )
        return sizes
    finally:
        await close_chroma(client)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    started = time.monotonic()
    cores = os.cpu_count()
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else cores
    print(
        f"RAG store benchmark: {cores} cores ({affinity} usable by this process); the embedder "
        f"(torch, CPU) and the Chroma server share the machine's {affinity} cores, and each "
        "call is sequential (embedding, then Chroma)"
    )
    # SIGTERM stops the run like Ctrl-C does, so the `finally` below always stops Chroma.
    previous_term = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        with tempfile.TemporaryDirectory(prefix="twinloop-bench-rag-") as tmp:
            settings = Settings(data_dir=Path(tmp), rag=RagSettings(chroma_port=free_port()))
            print(
                f"sizes {args.sizes} chunks, {args.chunks_per_doc} chunks/doc at "
                f"chunk_chars={settings.rag.chunk_chars} overlap={settings.rag.chunk_overlap}, "
                f"{args.batch_docs} docs per version, seed {args.seed}; Chroma at "
                f"{settings.rag.base_url}"
            )
            server = ChromaServer(settings)
            try:
                server.start()
                load_started = time.perf_counter()
                model_dir = resolve_embedding_model(None)
                embedder = TimedEmbedder(Embedder(model_dir))
                embedder.embed(["warm-up sentence for the embedding model"] * 8)
                embedder.take()
                load_s = time.perf_counter() - load_started
                waited = server.wait_healthy()
                print(
                    f"embedder {model_dir} loaded in {load_s:.1f} s; "
                    f"torch threads {_torch_threads()}; Chroma healthy {waited:.1f} s later"
                )
                sizes = asyncio.run(_bench(args, settings, embedder))
            finally:
                server.stop()
    except KeyboardInterrupt:
        print("\ninterrupted; Chroma stopped, temporary data removed", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous_term)
    write_results(args.json, "rag_latency", {"top_k": args.top_k, "sizes": sizes})
    print(f"\ntotal wall time {time.monotonic() - started:.1f} s")
    return 0


def _torch_threads() -> int:
    import torch

    return int(torch.get_num_threads())


if __name__ == "__main__":
    sys.exit(main())

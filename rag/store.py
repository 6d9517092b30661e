"""Per-domain knowledge in Chroma, with versioned visibility. The only code that speaks Chroma.

One collection per domain (`<prefix><domain>`), cosine space, created with no
embedding function: Chroma's default one downloads a model, so we always pass
our own embeddings.

Visibility rule. Every chunk carries `added_in`, the domain's RAG version that
added it, and `removed_in`, the version that removed it (`REMOVED_NEVER` while
it is live; Chroma metadata cannot be null). A reader pinned at version `v`
sees exactly the chunks with

    added_in <= v < removed_in

so ingesting at a new version is invisible to a slot pinned at an older one
(Active keeps its pinned version until a swap; rollback pins the old one
again), and nothing is ever deleted that an older pin could still see. Adding
a document id again at version `v` supersedes its live chunks from earlier
versions (they get `removed_in = v`); adding it again at the same version
replaces that version's chunks, so a retried ingestion is harmless. The
caller decides the version numbers (they only ever grow, per domain) and
serialises writes to one document; the store only records and filters.

Writing is split in two so that the slow part needs nothing else held:
`prepare_document` chunks and embeds (CPU only, no Chroma), `write_document`
stores the prepared chunks at a version. `undo_version` takes back everything
one version did in a domain (its chunks deleted, its removals made live again):
an ingest that fails after writing owns its version alone and undoes it whole.

Calls are made with Chroma's async HTTP client, each bounded by a timeout;
any failure reaches the caller as a `KnowledgeStoreError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import chromadb
import httpx
import numpy as np
from chromadb.api import AsyncClientAPI
from chromadb.api.models.AsyncCollection import AsyncCollection
from chromadb.api.types import Metadata, Where
from chromadb.base_types import LiteralValue, LogicalOperator, WhereOperator
from chromadb.config import Settings as ChromaSettings
from chromadb.errors import ChromaError
from numpy.typing import NDArray

from rag.chunking import chunk_text
from rag.errors import KnowledgeStoreError
from twinloop.errors import InvalidRequestError, TwinloopError
from twinloop.settings import RagSettings

# `removed_in` of a live chunk: larger than any version, and an int64 like every version.
REMOVED_NEVER = 1 << 62
DEFAULT_TIMEOUT_S = 30.0
_DOMAIN = re.compile(r"^[a-zA-Z0-9]([a-zA-Z0-9._-]*[a-zA-Z0-9])?$")


class TextEmbedder(Protocol):
    def embed(self, texts: Sequence[str]) -> NDArray[np.float32]: ...


@dataclass(frozen=True)
class PreparedDocument:
    """A document's chunks and their embeddings (one row per chunk), ready to be written."""

    chunks: tuple[str, ...]
    embeddings: NDArray[np.float32]


@dataclass(frozen=True)
class RetrievedChunk:
    doc_id: str
    text: str
    score: float
    """Cosine similarity to the question, 1 - Chroma's cosine distance; higher is closer."""
    source: str


async def connect_chroma(settings: RagSettings) -> AsyncClientAPI:
    """An async client for the configured Chroma server, telemetry off."""
    try:
        async with asyncio.timeout(settings.request_timeout_s):
            return await chromadb.AsyncHttpClient(
                host=settings.chroma_host,
                port=settings.chroma_port,
                settings=ChromaSettings(anonymized_telemetry=False),
            )
    except Exception as e:
        raise _translate(e, f"connect to Chroma at {settings.base_url}") from e


async def close_chroma(client: AsyncClientAPI) -> None:
    """Close the client's HTTP connections.

    chromadb 1.5.9's `AsyncClientAPI` has no public close: its HTTP clients live in a
    class-level dict of `AsyncFastAPI`, closed only by the private `_cleanup` (its sync
    `stop()` leaves a coroutine unawaited inside a running loop). Remove this when the
    async client grows an `aclose`.
    """
    server: Any = getattr(client, "_server", None)
    cleanup = getattr(server, "_cleanup", None)
    if cleanup is not None:
        await cleanup()


class KnowledgeStore:
    """Chunks of documents per domain, each visible from the version that added it."""

    def __init__(
        self,
        *,
        client: AsyncClientAPI,
        embedder: TextEmbedder,
        collection_prefix: str = "twinloop_",
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        self._client = client
        self._embedder = embedder
        self._prefix = collection_prefix
        self._timeout_s = timeout_s
        self._collections: dict[str, AsyncCollection] = {}

    async def prepare_document(
        self, *, doc_id: str, text: str, chunk_size: int, chunk_overlap: int
    ) -> PreparedDocument:
        """Chunk and embed `text`; nothing is stored. CPU-bound (the embedding runs in a thread)."""
        chunks = chunk_text(text, size=chunk_size, overlap=chunk_overlap)
        if not chunks:
            raise InvalidRequestError(f"document {doc_id!r} has no text to store")
        embeddings = await asyncio.to_thread(self._embedder.embed, chunks)
        return PreparedDocument(chunks=tuple(chunks), embeddings=embeddings)

    async def write_document(
        self, *, domain: str, doc_id: str, document: PreparedDocument, source: str, version: int
    ) -> int:
        """Store prepared chunks, visible from `version` on; returns the number of chunks."""
        collection = await self._collection(domain)
        chunks = list(document.chunks)
        ids = [f"{doc_id}:{version}:{i}" for i in range(len(chunks))]
        metadatas: list[Metadata] = [
            {"doc_id": doc_id, "source": source, "added_in": version, "removed_in": REMOVED_NEVER}
            for _ in chunks
        ]
        async with self._chroma(f"add document {doc_id!r} to {domain!r}", domain):
            # Same version again: a retry or a correction; replace, never mix.
            await collection.delete(where={"$and": [{"doc_id": doc_id}, {"added_in": version}]})
            await self._mark_removed(
                collection,
                {"$and": [{"doc_id": doc_id}, {"removed_in": REMOVED_NEVER}]},
                version,
            )
            await collection.add(
                ids=ids,
                embeddings=document.embeddings,
                documents=chunks,
                metadatas=metadatas,
            )
        return len(chunks)

    async def add_document(
        self,
        *,
        domain: str,
        doc_id: str,
        text: str,
        source: str,
        version: int,
        chunk_size: int,
        chunk_overlap: int,
    ) -> int:
        """Prepare and write in one call; returns the number of chunks."""
        document = await self.prepare_document(
            doc_id=doc_id, text=text, chunk_size=chunk_size, chunk_overlap=chunk_overlap
        )
        return await self.write_document(
            domain=domain, doc_id=doc_id, document=document, source=source, version=version
        )

    async def remove_document(self, *, domain: str, doc_id: str, version: int) -> int:
        """Hide the document's live chunks from `version` on; returns how many were hidden."""
        collection = await self._collection(domain)
        async with self._chroma(f"remove document {doc_id!r} from {domain!r}", domain):
            return await self._mark_removed(
                collection,
                {"$and": [{"doc_id": doc_id}, {"removed_in": REMOVED_NEVER}]},
                version,
            )

    async def undo_version(self, *, domain: str, version: int) -> None:
        """Take back what `version` did in `domain`: delete the chunks it added and make
        live again those it removed. Idempotent; only for a version no reader pins."""
        collection = await self._collection(domain)
        async with self._chroma(f"undo RAG version {version} of {domain!r}", domain):
            await collection.delete(where={"added_in": version})
            removed = await collection.get(where={"removed_in": version}, include=[])
            ids = removed["ids"]
            if ids:
                await collection.update(
                    ids=ids, metadatas=[{"removed_in": REMOVED_NEVER} for _ in ids]
                )

    async def query(
        self,
        *,
        domain: str,
        question: str,
        version: int,
        top_k: int,
        embedding: NDArray[np.float32] | None = None,
    ) -> list[RetrievedChunk]:
        """The `top_k` chunks closest to `question` among those visible at `version`.

        `embedding`: the question's, when the caller has it already (the gateway embeds
        each question once for routing and retrieval); else it is embedded here.
        """
        if top_k <= 0:
            raise InvalidRequestError(f"top_k must be positive, got {top_k}")
        if embedding is not None:
            vectors = np.asarray(embedding, dtype=np.float32).reshape(1, -1)
        else:
            vectors = await asyncio.to_thread(self._embedder.embed, [question])
        collection = await self._collection(domain)
        async with self._chroma(f"query {domain!r}", domain):
            result = await collection.query(
                query_embeddings=vectors,
                n_results=top_k,
                where=_visible_at(version),
                include=["documents", "metadatas", "distances"],
            )
        ids = result["ids"][0] if result["ids"] else []
        documents = (result.get("documents") or [[]])[0]
        metadatas = (result.get("metadatas") or [[]])[0]
        distances = (result.get("distances") or [[]])[0]
        return [
            RetrievedChunk(
                doc_id=str(metadata["doc_id"]),
                text=document,
                score=1.0 - float(distance),
                source=str(metadata["source"]),
            )
            for _, document, metadata, distance in zip(
                ids, documents, metadatas, distances, strict=True
            )
        ]

    async def count(self, domain: str) -> int:
        """Chunks stored for `domain`, of every version (removed ones included)."""
        collection = await self._collection(domain)
        async with self._chroma(f"count {domain!r}", domain):
            return await collection.count()

    async def heartbeat(self) -> bool:
        """Whether the Chroma server answers."""
        try:
            async with asyncio.timeout(self._timeout_s):
                await self._client.heartbeat()
        except Exception:
            return False
        return True

    # -- internals ------------------------------------------------------------------

    async def _collection(self, domain: str) -> AsyncCollection:
        cached = self._collections.get(domain)
        if cached is not None:
            return cached
        if not _DOMAIN.fullmatch(domain):
            raise InvalidRequestError(
                f"domain {domain!r} is not a valid name (letters, digits, '.', '_', '-')"
            )
        async with self._chroma(f"open the collection of {domain!r}", domain):
            collection = await self._client.get_or_create_collection(
                f"{self._prefix}{domain}",
                embedding_function=None,
                configuration={"hnsw": {"space": "cosine"}},
            )
        self._collections[domain] = collection
        return collection

    async def _mark_removed(self, collection: AsyncCollection, where: Where, version: int) -> int:
        found = await collection.get(where=where, include=[])
        ids = found["ids"]
        if ids:
            await collection.update(ids=ids, metadatas=[{"removed_in": version} for _ in ids])
        return len(ids)

    @contextlib.asynccontextmanager
    async def _chroma(self, action: str, domain: str) -> AsyncIterator[None]:
        """Bound a block of Chroma calls by the timeout and translate what it raises."""
        try:
            async with asyncio.timeout(self._timeout_s):
                yield
        except TwinloopError:
            raise
        except Exception as e:
            # A collection deleted behind our back: open it afresh next time.
            self._collections.pop(domain, None)
            raise _translate(e, action, self._timeout_s) from e


def _visible_at(version: int) -> Where:
    """Chunks added at or before `version` and not removed by it."""
    at_most: dict[WhereOperator | LogicalOperator, LiteralValue] = {"$lte": version}
    above: dict[WhereOperator | LogicalOperator, LiteralValue] = {"$gt": version}
    return {"$and": [{"added_in": at_most}, {"removed_in": above}]}


def _translate(error: Exception, action: str, timeout_s: float | None = None) -> TwinloopError:
    if isinstance(error, TwinloopError):
        return error
    if isinstance(error, TimeoutError):
        limit = f" within {timeout_s:g} s" if timeout_s is not None else ""
        return KnowledgeStoreError(f"Chroma did not answer{limit} to {action}")
    if isinstance(error, httpx.HTTPError):
        return KnowledgeStoreError(f"could not reach Chroma to {action}: {error!r}")
    if isinstance(error, ChromaError):
        return KnowledgeStoreError(f"Chroma refused to {action}: {error.message()}")
    return KnowledgeStoreError(f"Chroma failed to {action}: {error}")

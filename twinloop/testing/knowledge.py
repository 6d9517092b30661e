"""An in-memory document index with the same version rule as rag.store, for unit tests.

Besides the rows, it can be told to fail like an unreachable Chroma (`fail_writes`: the
write of those document ids raises; `fail_undo`: undoing a version raises) and to hold its
embedding until an event is set (`hold_embedding`; `embedding_started` is set when an
embedding begins), so tests can look at what happens while an ingest embeds or after it
failed half-way.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from rag.errors import KnowledgeStoreError
from rag.store import PreparedDocument

NEVER = 2**62


@dataclass(frozen=True)
class FakeChunk:
    doc_id: str
    text: str
    score: float
    source: str = ""


@dataclass
class FakeKnowledge:
    # (domain, doc_id, text, added_in, removed_in)
    rows: list[list[object]] = field(default_factory=list)
    fail_writes: set[str] = field(default_factory=set)
    """Document ids whose write raises `KnowledgeStoreError`."""
    fail_undo: bool = False
    """Undoing a version raises `KnowledgeStoreError` too."""
    hold_embedding: asyncio.Event | None = None
    """When given, every embedding waits until it is set."""
    embedding_started: asyncio.Event = field(default_factory=asyncio.Event)
    query_embeddings: list[NDArray[np.float32] | None] = field(default_factory=list)
    """The `embedding` each query was given (None: the store would embed the question)."""

    async def prepare_document(
        self, *, doc_id: str, text: str, chunk_size: int, chunk_overlap: int
    ) -> PreparedDocument:
        """One chunk, the whole text; a zero embedding."""
        await self._embed()
        return PreparedDocument(chunks=(text,), embeddings=np.zeros((1, 1), dtype=np.float32))

    async def write_document(
        self, *, domain: str, doc_id: str, document: PreparedDocument, source: str, version: int
    ) -> int:
        if doc_id in self.fail_writes:
            raise KnowledgeStoreError(f"Chroma failed to add document {doc_id!r} (injected)")
        # Like rag.store: the same version again replaces, an earlier one is superseded.
        self.rows = [r for r in self.rows if (r[0], r[1], r[3]) != (domain, doc_id, version)]
        await self.remove_document(domain=domain, doc_id=doc_id, version=version)
        self.rows.extend([domain, doc_id, chunk, version, NEVER] for chunk in document.chunks)
        return len(document.chunks)

    async def remove_document(self, *, domain: str, doc_id: str, version: int) -> int:
        removed = 0
        for row in self.rows:
            if row[0] == domain and row[1] == doc_id and row[4] == NEVER:
                row[4] = version
                removed += 1
        return removed

    async def undo_version(self, *, domain: str, version: int) -> None:
        if self.fail_undo:
            raise KnowledgeStoreError(f"Chroma failed to undo version {version} (injected)")
        self.rows = [r for r in self.rows if (r[0], r[3]) != (domain, version)]
        for row in self.rows:
            if row[0] == domain and row[4] == version:
                row[4] = NEVER

    async def query(
        self,
        *,
        domain: str,
        question: str,
        version: int,
        top_k: int,
        embedding: NDArray[np.float32] | None = None,
    ) -> list[FakeChunk]:
        self.query_embeddings.append(embedding)
        visible = [
            FakeChunk(doc_id=str(r[1]), text=str(r[2]), score=0.5)
            for r in self.rows
            if r[0] == domain and int(str(r[3])) <= version < int(str(r[4]))
        ]
        return visible[:top_k]

    def visible(self, domain: str, version: int) -> list[tuple[str, str]]:
        """(doc_id, text) of every row a reader pinned at `version` sees."""
        return [
            (str(r[1]), str(r[2]))
            for r in self.rows
            if r[0] == domain and int(str(r[3])) <= version < int(str(r[4]))
        ]

    async def _embed(self) -> None:
        self.embedding_started.set()
        if self.hold_embedding is not None:
            await self.hold_embedding.wait()

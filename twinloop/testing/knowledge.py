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

from rag.errors import KnowledgeStoreError

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
        await self._embed()
        if doc_id in self.fail_writes:
            raise KnowledgeStoreError(f"Chroma failed to add document {doc_id!r} (injected)")
        self.rows.append([domain, doc_id, text, version, NEVER])
        return 1

    async def remove_document(self, *, domain: str, doc_id: str, version: int) -> int:
        removed = 0
        for row in self.rows:
            if row[0] == domain and row[1] == doc_id and row[4] == NEVER:
                row[4] = version
                removed += 1
        return removed

    async def query(
        self, *, domain: str, question: str, version: int, top_k: int
    ) -> list[FakeChunk]:
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

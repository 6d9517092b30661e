"""An in-memory document index with the same version rule as rag.store, for unit tests."""

from __future__ import annotations

from dataclasses import dataclass, field

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

"""Retrieval for a prompt: the domain's chunks at a pinned RAG version, close enough to matter."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np
from numpy.typing import NDArray

from twinloop.inference.schemas import Context


class RetrievedText(Protocol):
    @property
    def doc_id(self) -> str: ...
    @property
    def text(self) -> str: ...
    @property
    def score(self) -> float: ...


class DocumentSearch(Protocol):
    """Retrieval at a pinned RAG version (rag.store.KnowledgeStore, or a fake in tests)."""

    async def query(
        self,
        *,
        domain: str,
        question: str,
        version: int,
        top_k: int,
        embedding: NDArray[np.float32] | None = None,
    ) -> Sequence[RetrievedText]: ...


async def relevant_contexts(
    knowledge: DocumentSearch | None,
    *,
    domain: str,
    question: str,
    version: int,
    top_k: int,
    min_score: float,
    embedding: NDArray[np.float32] | None = None,
) -> list[Context]:
    """Up to `top_k` chunks visible at `version` whose similarity reaches `min_score`.

    Every correction becomes a short fact document of its domain; without the bar, every
    question of that domain would get the nearest facts as context, related or not.
    """
    if knowledge is None or version <= 0:
        return []
    chunks = await knowledge.query(
        domain=domain, question=question, version=version, top_k=top_k, embedding=embedding
    )
    return [
        Context(doc_id=c.doc_id, text=c.text, score=round(c.score, 4))
        for c in chunks
        if c.score >= min_score
    ]


def with_contexts(question: str, contexts: Sequence[Context]) -> str:
    """The user turn: retrieved passages first, clearly fenced, then the question."""
    if not contexts:
        return question
    passages = "\n\n".join(f"[{i}] {c.text}" for i, c in enumerate(contexts, start=1))
    return (
        "Use the following passages if they help to answer the question.\n\n"
        f"{passages}\n\nQuestion: {question}"
    )

"""A small retrieval check with known right answers, for comparing embedding backends.

The documents are the made-up facts' sentences (the learning tests' and the demo's) among
distractor paragraphs (this checkout's README, ARCHITECTURE and deploy guide); the queries
are every phrasing of each fact's question, and a query's right document is its fact's
sentence. `bench/embeddings.py` prints the recall of each backend and
tests/integration/test_onnx_embeddings.py holds the int8 graph to the fp32 one's.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from twinloop.factsets import load_facts

_ROOT = Path(__file__).resolve().parents[2]
_FACTS = (
    _ROOT / "twinloop" / "testing" / "data" / "made_up_facts.jsonl",
    _ROOT / "twinloop" / "demo" / "data" / "organisation.jsonl",
)
_DISTRACTORS = (_ROOT / "README.md", _ROOT / "ARCHITECTURE.md", _ROOT / "docs" / "deploy.md")
_MIN_PARAGRAPH = 100


@dataclass(frozen=True)
class RetrievalSet:
    documents: list[str]
    queries: list[str]
    # For each query, the index of its right document.
    right: list[int]


def fact_retrieval_set() -> RetrievalSet:
    facts = [fact for path in _FACTS for fact in load_facts(path)]
    documents = [fact.answer for fact in facts]
    for path in _DISTRACTORS:
        paragraphs = re.split(r"\n\s*\n", path.read_text())
        documents += [p.strip() for p in paragraphs if len(p.strip()) >= _MIN_PARAGRAPH]
    queries: list[str] = []
    right: list[int] = []
    for index, fact in enumerate(facts):
        for question in [*fact.train_questions, *fact.test_questions]:
            queries.append(question)
            right.append(index)
    return RetrievalSet(documents, queries, right)


def recall_at(
    queries: NDArray[np.float32], documents: NDArray[np.float32], right: Sequence[int], k: int
) -> float:
    """The share of queries whose right document is among the `k` most similar (unit rows:
    the dot product is the cosine)."""
    ranked = np.argsort(-(queries @ documents.T), axis=1)[:, :k]
    return float(np.mean([r in row for r, row in zip(right, ranked, strict=True)]))
